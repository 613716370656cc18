// Per-rank checkpoint files: bit-exact round trips, sub-range reads, and every malformed file refused
// with a message naming the file, the section and the fix.
#include <doctest/doctest.h>
#include <zlib.h>

#include <cstring>

#include "engine/checkpoint_file.h"
#include "tests/cpu/ckpt_test_util.h"

using namespace vit;
using namespace vit::ckpt;
using vit::test::TempDir;

namespace {

constexpr uint32_t kChunk = 4096;  // small chunks so a few KiB span several of them

struct Sample {
  std::vector<std::byte> master = test::random_bytes(5000 * 4, 1);  // 5 chunks, the last one partial
  std::vector<std::byte> adam_m = test::random_bytes(5000 * 4, 2);
  std::vector<int64_t> range{100, 5100};
  std::vector<std::byte> rng = test::random_bytes(37, 3);
  std::vector<std::byte> half = test::random_bytes(3001 * 2, 4);  // odd count: payload not a multiple of 64

  void write(const fs::path& p, FileInfo info) const {
    CheckpointWriter w(p, info, kChunk);
    w.add("unit.3.master", DType::f32, 5000, master);
    w.add("unit.3.adam_m", DType::f32, 5000, adam_m);
    w.add<int64_t>("unit.3.range", range);
    w.add("empty", DType::u8, 0, {});
    w.add("rng", DType::u8, rng.size(), rng);
    w.add("half", DType::bf16, 3001, half);
    w.write();
  }
};

FileInfo sample_info() { return {1, 4, 0x1234abcdULL, 100}; }

uint64_t le(const std::vector<std::byte>& b, size_t at, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i) v |= uint64_t(std::to_integer<uint8_t>(b.at(at + i))) << (8 * i);
  return v;
}
void set_le(std::vector<std::byte>& b, size_t at, int n, uint64_t v) {
  for (int i = 0; i < n; ++i) b.at(at + i) = std::byte((v >> (8 * i)) & 0xff);
}
size_t entry(int i) { return kHeaderBytes + i * kEntryBytes; }

// Recomputes the metadata CRC after a deliberate edit, so the structural checks behind it are reached.
void reseal(std::vector<std::byte>& b) {
  const uint64_t n = le(b, kOffNumSections, 4), chunk = le(b, kOffChunkBytes, 4);
  uint64_t chunks = 0;
  for (uint64_t i = 0; i < n; ++i) chunks += (le(b, entry(i) + kEntOffBytes, 8) + chunk - 1) / chunk;
  const size_t meta_end = kHeaderBytes + n * kEntryBytes + 4 * chunks;
  set_le(b, kOffMetaCrc, 4, 0);
  set_le(b, kOffMetaCrc, 4, crc32_z(0, reinterpret_cast<const Bytef*>(b.data()), meta_end));
}

// Writes the sample to dir/step_100/rank_1.bin, applies `edit` to its bytes, returns the path.
template <class Edit>
fs::path damaged(const TempDir& dir, Edit edit) {
  fs::create_directories(dir / "step_100");
  const fs::path p = dir / "step_100" / "rank_1.bin";
  Sample().write(p, sample_info());
  std::vector<std::byte> b = test::read_all(p);
  edit(b);
  test::write_all(p, b);
  return p;
}

bool same(std::span<const std::byte> a, std::span<const std::byte> b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

TEST_CASE("checkpoint file: round trip is bit exact and the layout is as documented") {
  TempDir dir;
  const fs::path p = dir / "rank_1.bin";
  const Sample s;
  s.write(p, sample_info());
  CHECK_FALSE(fs::exists(io::tmp_path(p)));

  const CheckpointReader r(p);
  CHECK(r.info().rank == 1);
  CHECK(r.info().world_size == 4);
  CHECK(r.info().layout_hash == 0x1234abcdULL);
  CHECK(r.info().step == 100);
  CHECK(r.chunk_bytes() == kChunk);
  CHECK(r.file_bytes() == fs::file_size(p));
  REQUIRE(r.sections().size() == 6);
  const char* names[] = {"unit.3.master", "unit.3.adam_m", "unit.3.range", "empty", "rng", "half"};
  for (size_t i = 0; i < 6; ++i) {
    CHECK(r.sections()[i].name == names[i]);
    CHECK(r.sections()[i].offset % kPayloadAlign == 0);
  }
  CHECK(r.section("half").dtype == DType::bf16);
  CHECK(r.section("half").count == 3001);

  std::vector<std::byte> buf(s.master.size());
  r.read("unit.3.master", buf);
  CHECK(same(buf, s.master));
  r.read("unit.3.adam_m", buf);
  CHECK(same(buf, s.adam_m));
  CHECK(r.read_vector<int64_t>("unit.3.range") == s.range);
  CHECK(r.read_vector<uint8_t>("empty").empty());
  std::vector<uint8_t> rng = r.read_vector<uint8_t>("rng");
  CHECK(same(std::as_bytes(std::span(rng)), s.rng));
  std::vector<std::byte> half(s.half.size());
  r.read("half", half);
  CHECK(same(half, s.half));
  const std::vector<float> master = r.read_vector<float>("unit.3.master");
  CHECK(same(std::as_bytes(std::span(master)), s.master));  // NaN bit patterns included
  r.verify();

  // Header fields sit where the format comment says.
  const std::vector<std::byte> b = test::read_all(p);
  CHECK(std::memcmp(b.data(), "VITCKPT", 8) == 0);
  CHECK(le(b, kOffVersion, 4) == kVersion);
  CHECK(le(b, kOffNumSections, 4) == 6);
  CHECK(le(b, kOffFileBytes, 8) == b.size());
}

TEST_CASE("checkpoint file: rewriting replaces the file atomically and ignores a stale .tmp") {
  TempDir dir;
  const fs::path p = dir / "rank_0.bin";
  Sample().write(p, {0, 1, 7, 1});
  test::write_all(io::tmp_path(p), std::string("partial garbage from a crashed writer"));
  CHECK(CheckpointReader(p).info().step == 1);  // the crashed write did not touch the real file
  Sample().write(p, {0, 1, 7, 2});
  CHECK(CheckpointReader(p).info().step == 2);
  CHECK_FALSE(fs::exists(io::tmp_path(p)));
  {
    CheckpointWriter w(dir / "never.bin", {0, 1, 0, 0});
    const std::vector<float> x(10, 1.0f);
    w.add<float>("x", x);
  }  // destroyed without write(): nothing appears
  CHECK_FALSE(fs::exists(dir / "never.bin"));
  CHECK_FALSE(fs::exists(dir / "never.bin.tmp"));
}

TEST_CASE("checkpoint file: sub-range reads match the slice at every chunk boundary") {
  TempDir dir;
  const fs::path p = dir / "rank_0.bin";
  const Sample s;
  s.write(p, {0, 1, 0, 5});
  const CheckpointReader r(p);
  const uint64_t n = 5000, per_chunk = kChunk / 4;
  std::vector<std::pair<uint64_t, uint64_t>> cases = {{0, 0},         {0, n},     {0, 1},
                                                      {n - 1, 1},     {n, 0},     {per_chunk - 1, 2},
                                                      {per_chunk, per_chunk}, {per_chunk + 3, 3 * per_chunk},
                                                      {1, n - 2},     {4 * per_chunk, n - 4 * per_chunk}};
  for (uint64_t k = 0; k < 40; ++k) {  // random ranges too
    const uint64_t a = rng::bits(9, 1, k) % n, len = rng::bits(9, 2, k) % (n - a + 1);
    cases.emplace_back(a, len);
  }
  for (auto [first, count] : cases) {
    CAPTURE(first);
    CAPTURE(count);
    std::vector<float> got(count);
    r.read_range_into<float>("unit.3.master", first, got);
    CHECK(same(std::as_bytes(std::span(got)), std::span(s.master).subspan(first * 4, count * 4)));
  }
  std::vector<std::byte> half(10 * 2);
  r.read_range("half", 2995, 6, std::span(half).first(12));
  CHECK(same(std::span(half).first(12), std::span(s.half).subspan(2995 * 2, 12)));

  std::vector<float> out(10);
  CHECK_ERROR(r.read_range_into<float>("unit.3.master", n - 5, out), "elements [4995, 5005)", "unit.3.master",
              "holds 5000");
  CHECK_ERROR(r.read_range_into<float>("unit.3.range", 0, std::span(out).first(2)), "holds i64, expected f32");
  CHECK_ERROR(r.read_range("rng", 0, 5, std::span(half).first(4)), "holds 4 bytes, expected 5");
}

TEST_CASE("checkpoint file: a damaged payload chunk fails exactly the reads that touch it") {
  TempDir dir;
  const uint64_t per_chunk = kChunk / 4;
  uint64_t master_offset = 0;
  const fs::path p = damaged(dir, [&](std::vector<std::byte>& b) {
    // Find unit.3.master's payload from its table entry and damage its fourth chunk.
    master_offset = le(b, entry(0) + kEntOffOffset, 8);
    b.at(master_offset + 3 * kChunk + 17) ^= std::byte{1};
  });
  const CheckpointReader r(p);  // metadata is intact
  std::vector<float> got(per_chunk);
  r.read_range_into<float>("unit.3.master", 0, std::span(got));  // chunk 0 only
  r.read_range_into<float>("unit.3.master", 4 * per_chunk, std::span(got).first(5000 - 4 * per_chunk));
  CHECK_ERROR(r.read_range_into<float>("unit.3.master", 3 * per_chunk + 5, std::span(got).first(1)),
              "rank_1.bin", "section 'unit.3.master' checksum mismatch", "file corrupted", "delete",
              "step_100 or resume from another step");
  CHECK_ERROR(r.read_vector<float>("unit.3.master"), "checksum mismatch");
  CHECK_ERROR(r.verify(), "section 'unit.3.master' checksum mismatch");
  CHECK(r.read_vector<int64_t>("unit.3.range") == std::vector<int64_t>{100, 5100});  // other sections fine
}

TEST_CASE("checkpoint file: malformed files are refused before anything is allocated or read") {
  TempDir dir;
  // Header-level damage.
  CHECK_ERROR(CheckpointReader(damaged(dir, [](auto& b) { b.resize(10); })), "only 10 bytes",
              "truncated or not a checkpoint", "delete");
  CHECK_ERROR(CheckpointReader(damaged(dir, [](auto& b) { b[0] = std::byte{'X'}; })), "bad magic");
  CHECK_ERROR(CheckpointReader(damaged(dir, [](auto& b) { set_le(b, kOffVersion, 4, 2); })), "format version 2",
              "reads version 1");
  CHECK_ERROR(CheckpointReader(damaged(dir, [](auto& b) { b.resize(b.size() - 100); })), "truncated",
              "but its header says");
  CHECK_ERROR(CheckpointReader(damaged(dir, [](auto& b) { b.push_back(std::byte{0}); })), "trailing bytes");
  CHECK_ERROR(CheckpointReader(damaged(dir, [](auto& b) { b[kOffStep] ^= std::byte{1}; })),
              "header checksum mismatch", "step_100 or resume from another step");
  CHECK_ERROR(CheckpointReader(damaged(dir, [](auto& b) { b[entry(2) + 3] ^= std::byte{4}; })),
              "header checksum mismatch");
  CHECK_ERROR(CheckpointReader(damaged(dir, [](auto& b) { set_le(b, kOffChunkBytes, 4, 1000); })),
              "chunk size 1000");
  CHECK_ERROR(CheckpointReader(damaged(dir, [](auto& b) { set_le(b, kOffNumSections, 4, 1u << 20); })),
              "1048576 sections");
  CHECK_ERROR(CheckpointReader(damaged(dir, [](auto& b) { set_le(b, kOffNumSections, 4, 60000); })),
              "section table (60000 entries) extends past the end");
  CHECK_ERROR(CheckpointReader(damaged(dir, [](auto& b) { set_le(b, entry(1) + kEntOffBytes, 8, 1ull << 50); })),
              "section #1 claims");

  // Table-level damage with a valid checksum: the structural checks behind the CRC.
  auto resealed = [&](auto edit) {
    return damaged(dir, [&](std::vector<std::byte>& b) {
      edit(b);
      reseal(b);
    });
  };
  CHECK_ERROR(CheckpointReader(resealed([](auto& b) { set_le(b, kOffRank, 4, 4); })), "rank 4 not in [0, world size 4)");
  CHECK_ERROR(CheckpointReader(resealed([](auto& b) { set_le(b, entry(0) + kEntOffCount, 8, 4999); })),
              "section 'unit.3.master'", "4999 f32 elements do not fill its 20000 bytes");
  CHECK_ERROR(CheckpointReader(resealed([](auto& b) { set_le(b, entry(5) + kEntOffDtype, 4, 9); })),
              "section 'half' has unknown dtype code 9");
  CHECK_ERROR(CheckpointReader(resealed([](auto& b) { set_le(b, entry(5) + kEntOffDtype, 4, 1); })),
              "3001 f32 elements do not fill its 6002 bytes");
  CHECK_ERROR(CheckpointReader(resealed([](auto& b) {
                set_le(b, entry(4) + kEntOffOffset, 8, le(b, entry(4) + kEntOffOffset, 8) + 1);
              })),
              "section 'rng'", "not on a 64-byte boundary");
  CHECK_ERROR(CheckpointReader(resealed([](auto& b) { set_le(b, entry(5) + kEntOffOffset, 8, b.size() / 64 * 64); })),
              "section 'half'", "outside the payload area");
  CHECK_ERROR(CheckpointReader(resealed([](auto& b) { set_le(b, entry(5) + kEntOffOffset, 8, 0); })),
              "outside the payload area");
  CHECK_ERROR(CheckpointReader(resealed([](auto& b) {
                set_le(b, entry(1) + kEntOffOffset, 8, le(b, entry(0) + kEntOffOffset, 8) + 64);
              })),
              "sections 'unit.3.master' and 'unit.3.adam_m' overlap");
  CHECK_ERROR(CheckpointReader(resealed([](auto& b) { std::memcpy(&b[entry(1)], &b[entry(0)], kMaxNameBytes); })),
              "section 'unit.3.master' appears twice");
  CHECK_ERROR(CheckpointReader(resealed([](auto& b) { b[entry(3) + 2] = std::byte{0x07}; })),
              "section #3 has an invalid name");
  CHECK_ERROR(CheckpointReader(resealed([](auto& b) { b[entry(3) + 100] = std::byte{1}; })),
              "nonzero reserved bytes");

  // A valid file asked for what it does not hold.
  const CheckpointReader r(damaged(dir, [](auto&) {}));
  CHECK_ERROR(r.section("unit.4.master"), "rank_1.bin", "no section 'unit.4.master'");
  CHECK_ERROR(r.read_vector<int64_t>("unit.3.master"), "holds f32, expected i64");
  std::vector<std::byte> small(8);
  CHECK_ERROR(r.read("unit.3.master", small), "destination holds 8");
  CHECK_ERROR(CheckpointReader(dir / "nope.bin"), "cannot open", "nope.bin");
}

TEST_CASE("checkpoint file: the writer refuses inconsistent input") {
  TempDir dir;
  const std::vector<float> x(8, 0.5f);
  CheckpointWriter w(dir / "r.bin", {0, 2, 0, 0}, kChunk);
  w.add<float>("a", x);
  CHECK_ERROR(w.add<float>("a", x), "section 'a' added twice");
  CHECK_ERROR(w.add<float>(std::string(65, 'n'), x), "must be 1..64 printable");
  CHECK_ERROR(w.add<float>("has space", x), "must be 1..64 printable");
  CHECK_ERROR(w.add("b", DType::f32, 9, std::as_bytes(std::span(x))), "9 f32 elements need 36 bytes",
              "span holds 32");
  w.add<float>(std::string(64, 'm'), x);  // exactly 64 characters is allowed
  w.write();
  CHECK(CheckpointReader(dir / "r.bin").find(std::string(64, 'm')) != nullptr);
  CHECK_ERROR(w.write(), "write() called twice");
  CHECK_ERROR((CheckpointWriter(dir / "r2.bin", {2, 2, 0, 0})), "rank 2 not in [0, world size 2)");
  CHECK_ERROR((CheckpointWriter(dir / "r2.bin", {0, 1, 0, 0}, 1000)), "chunk size 1000");
  CheckpointWriter bad(dir / "missing_dir" / "r.bin", {0, 1, 0, 0});
  CHECK_ERROR(bad.write(), "cannot create", "missing_dir");
}

TEST_CASE("checkpoint file: every single-bit flip outside the alignment padding is detected") {
  TempDir dir;
  const fs::path good = dir / "good.bin", p = dir / "step_3" / "rank_0.bin";
  fs::create_directories(p.parent_path());
  Sample().write(good, {0, 1, 5, 3});
  const std::vector<std::byte> orig = test::read_all(good);
  // Bytes covered by a checksum or a check: header + tables, and each payload. The rest is zero padding.
  const CheckpointReader r(good);
  uint64_t chunks = 0;
  for (const SectionInfo& s : r.sections()) chunks += (s.bytes + kChunk - 1) / kChunk;
  std::vector<std::pair<uint64_t, uint64_t>> covered{{0, kHeaderBytes + r.sections().size() * kEntryBytes + 4 * chunks}};
  for (const SectionInfo& s : r.sections()) covered.emplace_back(s.offset, s.offset + s.bytes);
  int detected = 0, padding = 0;
  // 150 random positions, plus the first padding byte after the tables and after the first payload.
  std::vector<uint64_t> positions{covered[0].second, covered[1].second};
  for (uint64_t k = 0; k < 150; ++k) positions.push_back(rng::bits(77, 0, k) % orig.size());
  for (uint64_t k = 0; k < positions.size(); ++k) {
    const uint64_t pos = positions[k];
    const int bit = static_cast<int>(rng::bits(77, 1, k) % 8);
    std::vector<std::byte> b = orig;
    b[pos] ^= std::byte(1u << bit);
    test::write_all(p, b);
    bool caught = false;
    try {
      const CheckpointReader d(p);
      d.verify();
    } catch (const Error&) {
      caught = true;
    }
    bool in_covered = false;
    for (auto [lo, hi] : covered) in_covered |= pos >= lo && pos < hi;
    CAPTURE(pos);
    CHECK(caught == in_covered);
    detected += caught;
    padding += !in_covered;
  }
  CHECK(padding >= 2);
  CHECK(detected > 120);  // the padding is a small part of the file
  MESSAGE("bit flips detected: ", detected, " of ", positions.size(), " (", padding, " in alignment padding)");
}
