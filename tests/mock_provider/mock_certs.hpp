#pragma once
// In-process test PKI for byok-mock-provider: a fresh EC P-256 CA and a leaf
// certificate for localhost / 127.0.0.1 / ::1 signed by it. Nothing here is
// meant for production; the CA key never leaves the process.

#include <string>

namespace byok::mock {

// PEM text of a freshly generated certificate chain. Plain value type.
struct tls_material {
    std::string ca_pem;    // the trust anchor clients load (DIR/ca.pem)
    std::string cert_pem;  // leaf certificate the server presents
    std::string key_pem;   // leaf private key (PKCS#8)
};

// Generates a new CA and leaf (valid from one hour ago for 30 days).
// Throws std::runtime_error naming the failing OpenSSL step. Thread-safe.
[[nodiscard]] tls_material generate_tls_material();

// Writes ca.pem, cert.pem and key.pem (mode 0600) into dir, creating dir if
// needed. Each file is written to a temporary name and renamed, so a reader
// polling for ca.pem never sees a partial file. Throws on I/O errors.
void write_tls_material(const std::string& dir, const tls_material& m);

}  // namespace byok::mock
