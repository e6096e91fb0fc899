#pragma once
// One loopback TCP connection for the relay's unit tests: `a` connects,
// `b` is the accepted side (both on `ioc`).

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

namespace byok::relay::test {

inline void connect_loopback(boost::asio::io_context& ioc, boost::asio::ip::tcp::socket& a,
                             boost::asio::ip::tcp::socket& b) {
    boost::asio::ip::tcp::acceptor acc(ioc, {boost::asio::ip::address_v4::loopback(), 0});
    a.connect(acc.local_endpoint());
    acc.accept(b);
}

}  // namespace byok::relay::test
