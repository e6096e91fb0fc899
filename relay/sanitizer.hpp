#pragma once
// Whether this build runs under AddressSanitizer (GCC defines
// __SANITIZE_ADDRESS__, clang answers __has_feature).

namespace byok::relay {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool address_sanitizer_build = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool address_sanitizer_build = true;
#else
inline constexpr bool address_sanitizer_build = false;
#endif
#else
inline constexpr bool address_sanitizer_build = false;
#endif

}  // namespace byok::relay
