#include "relay/admission.hpp"

#include <doctest/doctest.h>

using namespace byok::relay;

TEST_CASE("body_budget: shares are granted up to the budget and given back") {
    body_budget b(1000);
    auto x = b.open();
    auto y = b.open();
    CHECK(x.grow_to(600));
    CHECK_FALSE(y.grow_to(500));  // 1,100 > 1,000: refused, nothing taken
    CHECK(y.bytes() == 0);
    CHECK(y.grow_to(400));
    CHECK(b.held() == 1000);
    CHECK(x.grow_to(600));  // no growth needed
    CHECK_FALSE(x.grow_to(601));
    x.release();
    CHECK(b.held() == 400);
    {
        auto z = b.open();
        CHECK(z.grow_to(600));
        CHECK(b.held() == 1000);
    }
    CHECK(b.held() == 400);
    auto moved = std::move(y);
    CHECK(b.held() == 400);
    moved.release();
    CHECK(b.held() == 0);
}

TEST_CASE("body_budget: a share larger than the whole budget is refused without overflow") {
    body_budget b(100);
    auto x = b.open();
    CHECK_FALSE(x.grow_to(static_cast<std::size_t>(-1)));
    CHECK(b.held() == 0);
}

TEST_CASE("in_flight_slot: at most max, given back on destruction") {
    std::atomic<std::int64_t> n{0};
    {
        auto a = in_flight_slot::try_take(n, 2);
        auto b = in_flight_slot::try_take(n, 2);
        auto c = in_flight_slot::try_take(n, 2);
        CHECK(a);
        CHECK(b);
        CHECK_FALSE(c);
        CHECK(n.load() == 2);
        auto d = in_flight_slot::none();
        d = std::move(a);
        CHECK(d);
        CHECK(n.load() == 2);
    }
    CHECK(n.load() == 0);
}
