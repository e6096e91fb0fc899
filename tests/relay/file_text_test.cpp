#include "relay/file_text.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "relay/config.hpp"
#include "relay/key_list.hpp"

namespace fs = std::filesystem;
using namespace byok::relay;

namespace {

struct temp_dir {
    fs::path path = fs::temp_directory_path() / ("byok-file-text-" + std::to_string(::getpid()));
    temp_dir() {
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~temp_dir() { fs::remove_all(path); }
};

void write(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

}  // namespace

TEST_CASE("read_regular_file: a regular file whole; too large, a FIFO, a directory or a missing path refused") {
    const temp_dir d;
    write(d.path / "small", "hello\n");
    const auto ok = read_regular_file((d.path / "small").string(), 6);
    REQUIRE(ok.text);
    CHECK(*ok.text == "hello\n");

    const auto large = read_regular_file((d.path / "small").string(), 5);
    CHECK_FALSE(large.text);
    CHECK(large.why.find("larger than 5") != std::string::npos);

    write(d.path / "empty", "");
    const auto empty = read_regular_file((d.path / "empty").string(), 5);
    REQUIRE(empty.text);
    CHECK(empty.text->empty());

    // A FIFO with no writer: a blocking open would wait for one for ever.
    const auto fifo = d.path / "fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    const auto f = read_regular_file(fifo.string(), 100);
    CHECK_FALSE(f.text);
    CHECK(f.why == "not a regular file");
    CHECK(regular_file_problem(fifo.string()) == std::optional<std::string>("not a regular file"));

    CHECK(read_regular_file(d.path.string(), 100).why == "not a regular file");
    CHECK_FALSE(read_regular_file((d.path / "missing").string(), 100).text);
    CHECK(regular_file_problem((d.path / "small").string()) == std::nullopt);
}

TEST_CASE("config and key list: a FIFO in place of a file is an error at once, not a hang") {
    const temp_dir d;
    const auto fifo = d.path / "fifo";
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    CHECK_THROWS_AS(load_config(fifo.string()), config_error);

    // A CA file that is a FIFO: OpenSSL would block opening it when the first connection is made.
    write(d.path / "relay.json", R"({"listen":"127.0.0.1:0","key_files":["k.json"],"providers":{"p":{"base_url":"https://127.0.0.1:1","ca_file":"fifo","paths":["/v1/x"]}}})");
    try {
        (void)load_config((d.path / "relay.json").string());
        FAIL("a FIFO as ca_file was accepted");
    } catch (const config_error& e) {
        CHECK(std::string(e.what()).find("not a regular file") != std::string::npos);
    }

    // The signed key list, also read again on every SIGHUP.
    std::vector<byok::crypto::relay_key> keys;
    keys.push_back(byok::crypto::relay_key::generate(1800000000));
    const auto ring = byok::crypto::keyring::from_keys(std::move(keys));
    std::vector<std::string> warnings;
    try {
        (void)signed_key_list::load(fifo.string(), *ring, 1800000000, warnings);
        FAIL("a FIFO as key_list_file was accepted");
    } catch (const config_error& e) {
        CHECK(std::string(e.what()).find("not a regular file") != std::string::npos);
    }
}
