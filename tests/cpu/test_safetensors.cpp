// safetensors: the writer's bytes equal the reference implementation's for the same input, round trips
// are bit exact, conversions to float are exact, and malformed files are refused with a clear message.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "engine/safetensors.h"
#include "engine/strict_json.h"
#include "tests/cpu/ckpt_test_util.h"

using namespace vit;
using namespace vit::safetensors;
using vit::test::TempDir;

namespace {

// 8-byte little-endian length + header text + data: how a file is laid out, built by hand.
std::vector<std::byte> make_file(const std::string& header, const std::vector<std::byte>& data,
                                 std::optional<uint64_t> claimed_len = std::nullopt) {
  const uint64_t n = claimed_len.value_or(header.size());
  std::vector<std::byte> b(8);
  for (int i = 0; i < 8; ++i) b[i] = std::byte((n >> (8 * i)) & 0xff);
  for (char c : header) b.push_back(std::byte(static_cast<unsigned char>(c)));
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

std::vector<std::byte> floats_le(std::initializer_list<float> v) {
  std::vector<std::byte> b(v.size() * 4);
  std::memcpy(b.data(), std::data(v), b.size());
  return b;
}

std::string header_of(const fs::path& p) {
  const std::vector<std::byte> b = test::read_all(p);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(std::to_integer<uint8_t>(b[i])) << (8 * i);
  return std::string(reinterpret_cast<const char*>(b.data()) + 8, n);
}

fs::path file_with(const TempDir& dir, const std::string& name, const std::vector<std::byte>& bytes) {
  const fs::path p = dir / name;
  test::write_all(p, bytes);
  return p;
}

}  // namespace

TEST_CASE("safetensors: writer output equals the reference implementation's bytes") {
  TempDir dir;
  const std::vector<float> v{0, 1, 2, 3, 4, 5};
  {  // One tensor whose header is exactly 64 bytes: no padding.
    Writer w;
    w.add_f32("attn.0", {1, 2, 3}, v);
    w.write(dir / "a.safetensors");
    const std::string h = R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})";
    CHECK(test::read_all(dir / "a.safetensors") == make_file(h, floats_le({0, 1, 2, 3, 4, 5})));
    CHECK(h.size() == 64);
  }
  {  // 65 bytes of JSON: padded with 7 spaces so the data starts 8-byte aligned.
    Writer w;
    w.add_f32("attn0", {1, 1, 2, 3}, v);
    w.write(dir / "b.safetensors");
    const std::string h = R"({"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}})" + std::string(7, ' ');
    CHECK(test::read_all(dir / "b.safetensors") == make_file(h, floats_le({0, 1, 2, 3, 4, 5})));
  }
  {  // No tensors; then metadata only.
    Writer w;
    w.write(dir / "c.safetensors");
    CHECK(test::read_all(dir / "c.safetensors") == make_file("{}      ", {}));
    w.set_metadata("framework", "pt");
    w.write(dir / "d.safetensors");
    CHECK(test::read_all(dir / "d.safetensors") == make_file(R"({"__metadata__":{"framework":"pt"}})" + std::string(5, ' '), {}));
    CHECK(Reader(dir / "d.safetensors").metadata().at("framework") == "pt");
  }
}

TEST_CASE("safetensors: mixed dtypes are ordered by alignment then name, packed and aligned") {
  TempDir dir;
  const std::vector<std::byte> i64 = test::random_bytes(16, 10), f64 = test::random_bytes(8, 11),
                               a = test::random_bytes(8, 12), b = test::random_bytes(12, 13),
                               h = test::random_bytes(6, 14), u = test::random_bytes(5, 15);
  Writer w;
  w.add("u", Dtype::U8, {5}, u);
  w.add("b", Dtype::F32, {3}, b);
  w.add("h", Dtype::BF16, {3, 1}, h);
  w.add("a", Dtype::F32, {2}, a);
  w.add("z", Dtype::F64, {}, f64);  // a scalar: shape []
  w.add("i", Dtype::I64, {2}, i64);
  w.set_metadata("step", "7");
  const fs::path p = dir / "m.safetensors";
  w.write(p);
  CHECK(header_of(p) == w.header());
  const std::string expect =
      R"({"__metadata__":{"step":"7"},"i":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
      R"("z":{"dtype":"F64","shape":[],"data_offsets":[16,24]},"a":{"dtype":"F32","shape":[2],"data_offsets":[24,32]},)"
      R"("b":{"dtype":"F32","shape":[3],"data_offsets":[32,44]},"h":{"dtype":"BF16","shape":[3,1],"data_offsets":[44,50]},)"
      R"("u":{"dtype":"U8","shape":[5],"data_offsets":[50,55]}})";
  CHECK(w.header() == expect + std::string((8 - expect.size() % 8) % 8, ' '));

  const Reader r(p);
  REQUIRE(r.tensors().size() == 6);
  CHECK(r.tensors()[0].name == "a");  // the reader lists by name
  for (const TensorInfo& t : r.tensors()) CHECK(t.begin % dtype_size(t.dtype) == 0);
  CHECK(r.read_raw("i") == i64);
  CHECK(r.read_raw("z") == f64);
  CHECK(r.read_raw("a") == a);
  CHECK(r.read_raw("b") == b);
  CHECK(r.read_raw("h") == h);
  CHECK(r.read_raw("u") == u);
  CHECK(r.tensor("h").shape == std::vector<int64_t>{3, 1});
  CHECK(r.tensor("z").shape.empty());
  CHECK(r.tensor("z").numel == 1);
  CHECK(r.metadata().at("step") == "7");
}

TEST_CASE("safetensors: F32 round trip is bit exact and F16/BF16/F64 convert exactly") {
  TempDir dir;
  std::vector<float> big(70000);  // every bit pattern, NaNs included, must come back unchanged
  for (size_t i = 0; i < big.size(); ++i) {
    const uint32_t bits = static_cast<uint32_t>(rng::bits(5, 0, i));
    std::memcpy(&big[i], &bits, 4);
  }
  const std::vector<uint16_t> f16{0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x8000, 0x7c00, 0xfc00, 0x3555};
  const std::vector<uint16_t> bf16{0x3f80, 0x4049, 0xff80, 0x0001, 0x8000};
  const std::vector<double> f64{0.1, -3.5, 1e300, 1e-50, 16777217.0};
  Writer w;
  w.add_f32("big", {7, 10000}, big);
  std::vector<uint16_t> f16big((1 << 20) + 77);  // spans two conversion blocks
  for (size_t i = 0; i < f16big.size(); ++i) f16big[i] = static_cast<uint16_t>(rng::bits(6, 0, i));
  w.add("f16big", Dtype::F16, {static_cast<int64_t>(f16big.size())}, std::as_bytes(std::span(f16big)));
  w.add("f16", Dtype::F16, {9}, std::as_bytes(std::span(f16)));
  w.add("bf16", Dtype::BF16, {5}, std::as_bytes(std::span(bf16)));
  w.add("f64", Dtype::F64, {5}, std::as_bytes(std::span(f64)));
  const std::vector<int64_t> ints{1, -2};
  w.add("ints", Dtype::I64, {2}, std::as_bytes(std::span(ints)));
  w.write(dir / "x.safetensors");
  const Reader r(dir / "x.safetensors");

  const std::vector<float> got = r.read_f32("big");
  CHECK(std::memcmp(got.data(), big.data(), big.size() * 4) == 0);

  const std::vector<float> hb = r.read_f32("f16big");
  size_t mismatches = 0;
  for (size_t i = 0; i < f16big.size(); ++i) {
    const float want = f16_to_f32(f16big[i]);
    mismatches += std::memcmp(&hb[i], &want, 4) != 0;
  }
  CHECK(mismatches == 0);
  const std::vector<float> h = r.read_f32("f16");
  CHECK(h[0] == 1.0f);
  CHECK(h[1] == -2.0f);
  CHECK(h[2] == 65504.0f);                    // largest half
  CHECK(h[3] == std::ldexp(1.0f, -24));       // smallest subnormal
  CHECK(h[4] == std::ldexp(1023.0f, -24));    // largest subnormal
  CHECK((h[5] == 0.0f && std::signbit(h[5])));
  CHECK(h[6] == std::numeric_limits<float>::infinity());
  CHECK(h[7] == -std::numeric_limits<float>::infinity());
  CHECK(h[8] == 0.25f * (1.0f + 341.0f / 1024.0f));  // 0x3555: exponent 13 - 15, mantissa 341
  const std::vector<float> b = r.read_f32("bf16");
  CHECK(b[0] == 1.0f);
  CHECK(b[1] == 3.140625f);
  CHECK(b[2] == -std::numeric_limits<float>::infinity());
  CHECK(b[3] == std::ldexp(1.0f, -133));  // bf16 subnormal
  CHECK((b[4] == 0.0f && std::signbit(b[4])));
  const std::vector<float> d = r.read_f32("f64");
  for (size_t i = 0; i < f64.size(); ++i) CHECK(d[i] == static_cast<float>(f64[i]));
  CHECK_ERROR(r.read_f32("ints"), "tensor 'ints' is I64", "read it raw");
  std::vector<float> wrong(3);
  CHECK_ERROR(r.read_f32("f64", wrong), "has 5 elements, the destination holds 3");
  CHECK_ERROR(r.tensor("head.weight"), "no tensor 'head.weight'", "x.safetensors");

  // NaN keeps its payload bits through the half conversion.
  uint32_t nan_bits;
  const float nan = f16_to_f32(0x7e01);
  std::memcpy(&nan_bits, &nan, 4);
  CHECK(nan_bits == (0x7f800000u | (0x201u << 13)));
}

TEST_CASE("safetensors: names with JSON escapes and non-ASCII round trip") {
  TempDir dir;
  const std::vector<float> v{1, 2};
  const std::string names[] = {"quote\"back\\slash", "tab\tnew\nline", "ctl\x01", "caf\xc3\xa9", "emoji\xf0\x9f\x98\x80"};
  Writer w;
  for (const std::string& n : names) w.add_f32(n, {2}, v);
  w.write(dir / "n.safetensors");
  const std::string h = header_of(dir / "n.safetensors");
  CHECK(h.find(R"("quote\"back\\slash")") != std::string::npos);
  CHECK(h.find(R"("tab\tnew\nline")") != std::string::npos);
  CHECK(h.find(R"("ctl\u0001")") != std::string::npos);
  const Reader r(dir / "n.safetensors");
  for (const std::string& n : names) CHECK(r.read_f32(n) == v);
  // \u escapes, including a surrogate pair, decode to the same names.
  const std::string hdr = R"({"caf\u00e9":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                          R"("\ud83d\ude00":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})";
  const Reader e(file_with(dir, "e.safetensors", make_file(hdr, test::random_bytes(2, 3))));
  CHECK(e.find("caf\xc3\xa9") != nullptr);
  CHECK(e.find("\xf0\x9f\x98\x80") != nullptr);
}

TEST_CASE("safetensors: malformed files are refused with a clear message") {
  TempDir dir;
  const std::vector<std::byte> data24 = floats_le({0, 1, 2, 3, 4, 5});
  auto open = [&](const std::vector<std::byte>& bytes) { return Reader(file_with(dir, "bad.safetensors", bytes)); };
  auto hdr = [&](const std::string& h) { return open(make_file(h, data24)); };
  const std::string ok_entry = R"("t":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})";

  CHECK(hdr("{" + ok_entry + "}").tensors().size() == 1);  // the baseline is valid

  // Framing.
  CHECK_ERROR(open(std::vector<std::byte>(5)), "only 5 bytes", "bad.safetensors");
  CHECK_ERROR(open(make_file("{" + ok_entry + "}", data24, 1000)), "header length 1000 runs past the end");
  CHECK_ERROR(open(make_file("{}", {}, 200'000'000)), "exceeds the 100000000-byte limit");
  CHECK_ERROR(open(make_file("{}", {}, UINT64_MAX)), "exceeds");
  CHECK_ERROR(hdr("{\"t\xff\":1}"), "not valid UTF-8");
  CHECK_ERROR(hdr("{\"\xc0\xaf\":1}"), "not valid UTF-8");  // overlong '/'
  CHECK_ERROR(hdr("{\"\xed\xa0\x80\":1}"), "not valid UTF-8");  // encoded surrogate
  CHECK_ERROR(hdr("[1,2]   "), "does not start with '{'");

  // JSON syntax.
  CHECK_ERROR(hdr("{" + ok_entry + ",}"), "invalid JSON at byte", "expected a string key");
  CHECK_ERROR(hdr(R"({"t" 1})"), "expected ':'");
  CHECK_ERROR(hdr(R"({'t':1})"), "expected a string key");
  CHECK_ERROR(hdr(R"({"t":01})"), "leading zero");
  CHECK_ERROR(hdr(R"({"t":1.})"), "digits after the decimal point");
  CHECK_ERROR(hdr("{\"t\":\"a\x01\"}"), "raw control character");
  CHECK_ERROR(hdr(R"({"t":"\q"})"), "invalid escape");
  CHECK_ERROR(hdr(R"({"t":"\ud800"})"), "high surrogate not followed by a low surrogate");
  CHECK_ERROR(hdr(R"({"t":"\udc00"})"), "lone low surrogate");
  CHECK_ERROR(hdr(R"({"t":"abc)"), "unterminated string");
  CHECK_ERROR(hdr("{" + ok_entry + "}x"), "unexpected characters after the JSON value");
  CHECK_ERROR(hdr("{" + ok_entry + "} /* c */"), "unexpected characters");
  CHECK_ERROR(hdr(R"({"t":tru})"), "unknown literal");
  CHECK_ERROR(hdr("{\"t\":" + std::string(100, '[') + std::string(100, ']') + "}"), "nesting deeper");

  // Header semantics.
  CHECK_ERROR(hdr(R"({"t":{"dtype":"F33","shape":[2,3],"data_offsets":[0,24]}})"), "tensor 't'",
              "unsupported dtype \"F33\"", "F32");
  CHECK_ERROR(hdr(R"({"t":{"dtype":7,"shape":[2,3],"data_offsets":[0,24]}})"), "dtype is a number");
  CHECK_ERROR(hdr(R"({"t":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})"), "tensor 't'",
              "6 F32 elements (24 bytes) but data_offsets span 20 bytes");
  CHECK_ERROR(hdr(R"({"t":{"dtype":"F32","shape":[2,3],"data_offsets":[8,1000]}})"), "run past the end of the data buffer");
  CHECK_ERROR(hdr(R"({"t":{"dtype":"F32","shape":[2,3],"data_offsets":[24,0]}})"), "end before they begin");
  CHECK_ERROR(hdr(R"({"t":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24,48]}})"), "two integers");
  CHECK_ERROR(hdr(R"({"t":{"dtype":"F32","shape":[2,3],"data_offsets":[0,-24]}})"), "non-negative integers");
  CHECK_ERROR(hdr(R"({"t":{"dtype":"F32","shape":[2,-3],"data_offsets":[0,24]}})"), "shape entry -3");
  CHECK_ERROR(hdr(R"({"t":{"dtype":"F32","shape":[2,3.0],"data_offsets":[0,24]}})"), "shape entry 3.0");
  CHECK_ERROR(hdr(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,24]}})"), "overflows");
  CHECK_ERROR(hdr(R"({"t":{"dtype":"F32","data_offsets":[0,24]}})"), "tensor 't' lacks \"shape\"");
  CHECK_ERROR(hdr(R"({"t":[1]})"), "tensor 't' is an array, expected an object");
  CHECK_ERROR(hdr(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                  R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})"),
              "tensors 'a' and 'b' overlap");
  CHECK_ERROR(hdr("{" + ok_entry + "," + ok_entry + "}"), "duplicate key \"t\"");
  CHECK_ERROR(hdr(R"({"__metadata__":{"k":1}})"), "metadata \"k\" is a number, expected a string");
  CHECK_ERROR(hdr(R"({"__metadata__":[]})"), "\"__metadata__\" is an array");
}

TEST_CASE("safetensors: the reader tolerates what the format allows") {
  TempDir dir;
  const std::vector<std::byte> data = test::random_bytes(32, 7);
  // Gaps between tensors, an empty tensor, unknown members, whitespace and padding.
  const std::string h = "{\"a\" : {\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,12],\"extra\":{\"x\":[null,true]}},\n"
                        "\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[12,12]},"
                        "\"b\":{\"shape\":[2],\"dtype\":\"I64\",\"data_offsets\":[16,32]}}   ";
  test::write_all(dir / "g.safetensors", make_file(h, data));
  const Reader r(dir / "g.safetensors");
  CHECK(r.read_raw("a") == std::vector<std::byte>(data.begin() + 8, data.begin() + 12));
  CHECK(r.read_raw("b") == std::vector<std::byte>(data.begin() + 16, data.end()));
  CHECK(r.read_raw("e").empty());
  CHECK(r.tensor("e").numel == 0);
}

TEST_CASE("strict json: numbers as exact integers and string escaping") {
  auto num = [](const char* t) { return json::as_u64(json::parse(t, "test")); };
  CHECK(num("0") == 0u);
  CHECK(num("18446744073709551615") == UINT64_MAX);
  CHECK_FALSE(num("18446744073709551616"));
  CHECK_FALSE(num("-0"));
  CHECK_FALSE(num("1e3"));
  CHECK_FALSE(num("2.0"));
  CHECK_FALSE(json::as_u64(json::parse("\"5\"", "test")));
  const json::Value v = json::parse(R"( {"a": [1, -2.5e-3, true, false, null, "x\/y\u0041"]} )", "test");
  REQUIRE(v.get("a") != nullptr);
  const json::Value& a = *v.get("a");
  REQUIRE(a.items.size() == 6);
  CHECK(a.items[1].text == "-2.5e-3");
  CHECK(a.items[2].boolean);
  CHECK(a.items[4].kind == json::Value::Kind::null);
  CHECK(a.items[5].text == "x/yA");
  std::string out;
  json::append_string(out, std::string("a\"\\\x1f\xc3\xa9", 6));
  CHECK(out == "\"a\\\"\\\\\\u001f\xc3\xa9\"");
  CHECK(json::parse(out, "test").text == std::string("a\"\\\x1f\xc3\xa9", 6));
  CHECK_ERROR(json::parse("", "origin"), "origin: invalid JSON at byte 0", "unexpected end of input");
}

TEST_CASE("safetensors: writer refuses inconsistent tensors") {
  const std::vector<float> v(6);
  Writer w;
  w.add_f32("t", {2, 3}, v);
  CHECK_ERROR(w.add_f32("t", {6}, v), "tensor 't' added twice");
  CHECK_ERROR(w.add_f32("u", {4}, v), "4 F32 elements but 24 bytes");
  CHECK_ERROR(w.add_f32("__metadata__", {6}, v), "reserved");
  CHECK_ERROR(w.add_f32("n", {-1, -6}, v), "negative dimension");
  TempDir dir;
  CHECK_ERROR(w.write(dir / "no" / "x.safetensors"), "cannot create");
  CHECK_FALSE(fs::exists(dir / "no"));
}

TEST_CASE("safetensors: random damage to the header is refused or harmless, never a crash") {
  TempDir dir;
  const std::vector<float> a(12, 1.0f), b(5, 2.0f);
  Writer w;
  w.add_f32("blocks.0.attn.qkv.weight", {3, 4}, a);
  w.add_f32("norm.bias", {5}, b);
  w.set_metadata("format", "pt");
  w.write(dir / "ok.safetensors");
  const std::vector<std::byte> orig = test::read_all(dir / "ok.safetensors");
  const uint64_t header_end = 8 + w.header().size();
  int refused = 0;
  for (uint64_t k = 0; k < 200; ++k) {
    std::vector<std::byte> bytes = orig;
    const int edits = 1 + static_cast<int>(rng::bits(88, 0, k) % 3);
    for (int e = 0; e < edits; ++e) {
      const uint64_t pos = rng::bits(88, 1, k * 3 + e) % header_end;
      bytes[pos] = std::byte(rng::bits(88, 2, k * 3 + e) & 0xff);
    }
    test::write_all(dir / "fuzz.safetensors", bytes);
    try {  // anything but a vit::Error (bad_alloc, a crash) fails the test
      const Reader r(dir / "fuzz.safetensors");
      for (const TensorInfo& t : r.tensors()) (void)r.read_raw(t.name);
    } catch (const Error&) {
      ++refused;
    }
  }
  CHECK(refused > 100);
  MESSAGE("damaged headers refused: ", refused, " of 200");
}
