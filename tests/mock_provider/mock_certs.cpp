#include "mock_certs.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <sys/stat.h>

namespace byok::mock {

namespace {

struct pkey_free { void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); } };
struct x509_free { void operator()(X509* p) const { X509_free(p); } };
struct bio_free { void operator()(BIO* p) const { BIO_free(p); } };
struct ext_free { void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); } };
struct bn_free { void operator()(BIGNUM* p) const { BN_free(p); } };
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_free>;
using x509_ptr = std::unique_ptr<X509, x509_free>;
using bio_ptr = std::unique_ptr<BIO, bio_free>;
using ext_ptr = std::unique_ptr<X509_EXTENSION, ext_free>;
using bn_ptr = std::unique_ptr<BIGNUM, bn_free>;

void check(bool ok, const char* step) {
    if (!ok) {
        throw std::runtime_error(std::string("certificate generation failed at ") + step);
    }
}

pkey_ptr new_p256_key() {
    pkey_ptr key(EVP_EC_gen("P-256"));
    check(key != nullptr, "EVP_EC_gen");
    return key;
}

void add_ext(X509* cert, X509* issuer, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
    ext_ptr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
    check(ext != nullptr, "X509V3_EXT_conf_nid");
    check(X509_add_ext(cert, ext.get(), -1) == 1, "X509_add_ext");
}

// A certificate skeleton: v3, random positive 127-bit serial, validity, subject CN, public key.
x509_ptr new_cert(EVP_PKEY* key, const char* cn) {
    x509_ptr cert(X509_new());
    check(cert != nullptr, "X509_new");
    check(X509_set_version(cert.get(), X509_VERSION_3) == 1, "X509_set_version");
    unsigned char serial[16];
    check(RAND_bytes(serial, sizeof serial) == 1, "RAND_bytes");
    serial[0] &= 0x7f;
    bn_ptr bn(BN_bin2bn(serial, sizeof serial, nullptr));
    check(bn != nullptr && BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get())) != nullptr,
          "serial");
    check(X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) != nullptr, "notBefore");
    check(X509_gmtime_adj(X509_getm_notAfter(cert.get()), 30L * 24 * 3600) != nullptr, "notAfter");
    X509_NAME* name = X509_get_subject_name(cert.get());
    check(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                     reinterpret_cast<const unsigned char*>("byok-mock-provider"),
                                     -1, -1, 0) == 1, "subject O");
    check(X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                     reinterpret_cast<const unsigned char*>(cn), -1, -1, 0) == 1,
          "subject CN");
    check(X509_set_pubkey(cert.get(), key) == 1, "X509_set_pubkey");
    return cert;
}

std::string to_pem(X509* cert) {
    bio_ptr bio(BIO_new(BIO_s_mem()));
    check(bio != nullptr && PEM_write_bio_X509(bio.get(), cert) == 1, "PEM_write_bio_X509");
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}

std::string to_pem(EVP_PKEY* key) {
    bio_ptr bio(BIO_new(BIO_s_mem()));
    check(bio != nullptr &&
              PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr) == 1,
          "PEM_write_bio_PrivateKey");
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
}

void write_file(const std::filesystem::path& path, const std::string& text, bool secret) {
    const auto tmp = std::filesystem::path(path.string() + ".tmp");
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out) {
            throw std::runtime_error("cannot write " + tmp.string());
        }
        if (secret) {
            ::chmod(tmp.c_str(), 0600);
        }
        out.write(text.data(), static_cast<std::streamsize>(text.size()));
        out.flush();
        if (!out) {
            throw std::runtime_error("cannot write " + tmp.string());
        }
    }
    std::filesystem::rename(tmp, path);
}

}  // namespace

tls_material generate_tls_material() {
    const pkey_ptr ca_key = new_p256_key();
    const x509_ptr ca = new_cert(ca_key.get(), "byok-mock-provider test CA");
    check(X509_set_issuer_name(ca.get(), X509_get_subject_name(ca.get())) == 1, "CA issuer");
    add_ext(ca.get(), ca.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
    add_ext(ca.get(), ca.get(), NID_key_usage, "critical,keyCertSign,cRLSign");
    add_ext(ca.get(), ca.get(), NID_subject_key_identifier, "hash");
    check(X509_sign(ca.get(), ca_key.get(), EVP_sha256()) > 0, "X509_sign CA");

    const pkey_ptr leaf_key = new_p256_key();
    const x509_ptr leaf = new_cert(leaf_key.get(), "localhost");
    check(X509_set_issuer_name(leaf.get(), X509_get_subject_name(ca.get())) == 1, "leaf issuer");
    add_ext(leaf.get(), ca.get(), NID_basic_constraints, "critical,CA:FALSE");
    add_ext(leaf.get(), ca.get(), NID_key_usage, "critical,digitalSignature");
    add_ext(leaf.get(), ca.get(), NID_ext_key_usage, "serverAuth");
    add_ext(leaf.get(), ca.get(), NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1,IP:::1");
    add_ext(leaf.get(), ca.get(), NID_subject_key_identifier, "hash");
    add_ext(leaf.get(), ca.get(), NID_authority_key_identifier, "keyid:always");
    check(X509_sign(leaf.get(), ca_key.get(), EVP_sha256()) > 0, "X509_sign leaf");

    return tls_material{to_pem(ca.get()), to_pem(leaf.get()), to_pem(leaf_key.get())};
}

void write_tls_material(const std::string& dir, const tls_material& m) {
    const std::filesystem::path base(dir);
    std::filesystem::create_directories(base);
    write_file(base / "key.pem", m.key_pem, true);
    write_file(base / "cert.pem", m.cert_pem, false);
    // Last: its presence is what a test harness may poll for.
    write_file(base / "ca.pem", m.ca_pem, false);
}

}  // namespace byok::mock
