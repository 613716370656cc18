#include "engine/safetensors.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "engine/check.h"
#include "engine/strict_json.h"

namespace vit::safetensors {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; add byte swaps");

namespace {
struct DtypeRow {
  Dtype t;
  const char* name;
  size_t size;
};
constexpr DtypeRow kDtypes[] = {
    {Dtype::BOOL, "BOOL", 1}, {Dtype::U8, "U8", 1},     {Dtype::I8, "I8", 1},     {Dtype::F8_E5M2, "F8_E5M2", 1},
    {Dtype::F8_E4M3, "F8_E4M3", 1}, {Dtype::I16, "I16", 2}, {Dtype::U16, "U16", 2}, {Dtype::F16, "F16", 2},
    {Dtype::BF16, "BF16", 2}, {Dtype::I32, "I32", 4},   {Dtype::U32, "U32", 4},   {Dtype::F32, "F32", 4},
    {Dtype::F64, "F64", 8},   {Dtype::I64, "I64", 8},   {Dtype::U64, "U64", 8},
};
const DtypeRow& row(Dtype t) { return kDtypes[static_cast<int>(t)]; }

std::string supported_list() {
  std::string s;
  for (const DtypeRow& r : kDtypes) s += (s.empty() ? "" : ", ") + std::string(r.name);
  return s;
}

uint64_t get_u64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t(std::to_integer<uint8_t>(p[i])) << (8 * i);
  return v;
}
}  // namespace

size_t dtype_size(Dtype t) { return row(t).size; }
const char* dtype_name(Dtype t) { return row(t).name; }
std::optional<Dtype> parse_dtype(std::string_view name) {
  for (const DtypeRow& r : kDtypes)
    if (name == r.name) return r.t;
  return std::nullopt;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24, exact in float
    const float v = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));  // inf / NaN with payload
  return std::bit_cast<float>(sign | ((exp + 127 - 15) << 23) | (mant << 13));
}

float bf16_to_f32(uint16_t h) { return std::bit_cast<float>(uint32_t(h) << 16); }

// ---------------------------------------------------------------------------------------------
// Reader

Reader::Reader(fs::path path) : file_(io::File::open_read(path)) {
  const std::string w = where();
  const uint64_t size = file_.size();
  VIT_REQUIRE(size >= 8, w, "only ", size, " bytes, smaller than the 8-byte header length (truncated or not a ",
              "safetensors file)");
  std::byte len_bytes[8];
  file_.read_at(0, len_bytes);
  const uint64_t n = get_u64(len_bytes);
  VIT_REQUIRE(n <= kMaxHeaderBytes, w, "header length ", n, " exceeds the ", kMaxHeaderBytes,
              "-byte limit (corrupted, or not a safetensors file)");
  VIT_REQUIRE(n <= size - 8, w, "header length ", n, " runs past the end of the file (", size,
              " bytes): the file is truncated or not a safetensors file");
  VIT_REQUIRE(n >= 2, w, "header of ", n, " bytes cannot hold a JSON object (corrupted)");
  std::string header(static_cast<size_t>(n), '\0');
  file_.read_at(8, std::as_writable_bytes(std::span(header.data(), header.size())));
  VIT_REQUIRE(json::valid_utf8(header), w, "header is not valid UTF-8 (corrupted, or not a safetensors file)");
  VIT_REQUIRE(header.front() == '{', w, "header does not start with '{' (corrupted, or not a safetensors file)");
  const json::Value root = json::parse(header, "safetensors " + file_.path().string() + ": header");
  VIT_REQUIRE(root.kind == json::Value::Kind::object, w, "header is ", json::kind_name(root.kind),
              ", expected an object");
  data_start_ = 8 + n;
  const uint64_t buffer = size - data_start_;

  for (size_t k = 0; k < root.keys.size(); ++k) {
    const std::string& name = root.keys[k];
    const json::Value& v = root.items[k];
    if (name == "__metadata__") {
      VIT_REQUIRE(v.kind == json::Value::Kind::object, w, "\"__metadata__\" is ", json::kind_name(v.kind),
                  ", expected an object of strings");
      for (size_t m = 0; m < v.keys.size(); ++m) {
        VIT_REQUIRE(v.items[m].kind == json::Value::Kind::string, w, "metadata \"", v.keys[m], "\" is ",
                    json::kind_name(v.items[m].kind), ", expected a string");
        metadata_[v.keys[m]] = v.items[m].text;
      }
      continue;
    }
    const std::string t = "tensor '" + name + "' ";
    VIT_REQUIRE(!name.empty(), w, "a tensor has an empty name");
    VIT_REQUIRE(v.kind == json::Value::Kind::object, w, t, "is ", json::kind_name(v.kind), ", expected an object");
    // Unknown members are ignored, as the reference implementation does.
    const json::Value* dt = v.get("dtype");
    const json::Value* shape = v.get("shape");
    const json::Value* offs = v.get("data_offsets");
    VIT_REQUIRE(dt && shape && offs, w, t, "lacks ", !dt ? "\"dtype\"" : !shape ? "\"shape\"" : "\"data_offsets\"");
    VIT_REQUIRE(dt->kind == json::Value::Kind::string, w, t, "dtype is ", json::kind_name(dt->kind),
                ", expected a string");
    const std::optional<Dtype> dtype = parse_dtype(dt->text);
    VIT_REQUIRE(dtype, w, t, "has unsupported dtype \"", dt->text, "\" (supported: ", supported_list(), ")");
    TensorInfo info;
    info.name = name;
    info.dtype = *dtype;
    VIT_REQUIRE(shape->kind == json::Value::Kind::array, w, t, "shape is ", json::kind_name(shape->kind),
                ", expected an array of non-negative integers");
    uint64_t numel = 1;
    bool overflow = false, zero = false;
    for (const json::Value& d : shape->items) {
      const std::optional<uint64_t> x = json::as_u64(d);
      VIT_REQUIRE(x && *x <= uint64_t(INT64_MAX), w, t, "shape entry ", d.text.empty() ? json::kind_name(d.kind) : d.text,
                  " is not a non-negative integer");
      info.shape.push_back(static_cast<int64_t>(*x));
      if (*x == 0) zero = true;
      else if (numel > UINT64_MAX / *x) overflow = true;
      numel *= *x;
    }
    // A zero dimension makes the product 0 however large the others are.
    if (zero) numel = 0, overflow = false;
    VIT_REQUIRE(!overflow && numel <= UINT64_MAX / dtype_size(*dtype), w, t, "shape overflows 64-bit sizes (corrupted)");
    info.numel = numel;
    VIT_REQUIRE(offs->kind == json::Value::Kind::array && offs->items.size() == 2, w, t,
                "data_offsets must be an array of two integers [begin, end]");
    const std::optional<uint64_t> b = json::as_u64(offs->items[0]), e = json::as_u64(offs->items[1]);
    VIT_REQUIRE(b && e, w, t, "data_offsets must be non-negative integers");
    VIT_REQUIRE(*b <= *e, w, t, "data_offsets [", *b, ", ", *e, "] end before they begin (corrupted)");
    VIT_REQUIRE(*e <= buffer, w, t, "data_offsets [", *b, ", ", *e, "] run past the end of the data buffer (",
                buffer, " bytes): the file is truncated or corrupted");
    VIT_REQUIRE(*e - *b == numel * dtype_size(*dtype), w, t, "has shape of ", numel, " ", dtype_name(*dtype),
                " elements (", numel * dtype_size(*dtype), " bytes) but data_offsets span ", *e - *b, " bytes");
    info.begin = *b;
    info.end = *e;
    tensors_.push_back(std::move(info));
  }

  std::vector<const TensorInfo*> by_offset;
  for (const TensorInfo& t : tensors_)
    if (t.end > t.begin) by_offset.push_back(&t);  // empty tensors occupy nothing
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    VIT_REQUIRE(by_offset[i - 1]->end <= by_offset[i]->begin, w, "tensors '", by_offset[i - 1]->name, "' and '",
                by_offset[i]->name, "' overlap in the data buffer (corrupted)");
  std::sort(tensors_.begin(), tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) { return a.name < b.name; });
}

const TensorInfo* Reader::find(std::string_view name) const {
  auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                             [](const TensorInfo& t, std::string_view n) { return t.name < n; });
  return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

const TensorInfo& Reader::tensor(std::string_view name) const {
  const TensorInfo* t = find(name);
  if (!t)
    fail(where(), "no tensor '", name, "' (the file holds ", tensors_.size(),
         " tensors; check that it matches the model: same architecture and timm parameter names)");
  return *t;
}

void Reader::read_raw(std::string_view name, std::span<std::byte> out) const {
  const TensorInfo& t = tensor(name);
  VIT_REQUIRE(out.size() == t.end - t.begin, where(), "tensor '", name, "' is ", t.end - t.begin,
              " bytes, the destination holds ", out.size());
  file_.read_at(data_start_ + t.begin, out);
}

std::vector<std::byte> Reader::read_raw(std::string_view name) const {
  const TensorInfo& t = tensor(name);
  std::vector<std::byte> v(t.end - t.begin);
  read_raw(name, v);
  return v;
}

void Reader::read_f32(std::string_view name, std::span<float> out) const {
  const TensorInfo& t = tensor(name);
  VIT_REQUIRE(out.size() == t.numel, where(), "tensor '", name, "' has ", t.numel,
              " elements, the destination holds ", out.size(), " (shape mismatch with the model)");
  const size_t es = dtype_size(t.dtype);
  if (t.dtype == Dtype::F32) {
    file_.read_at(data_start_ + t.begin, std::as_writable_bytes(out));
    return;
  }
  VIT_REQUIRE(t.dtype == Dtype::F16 || t.dtype == Dtype::BF16 || t.dtype == Dtype::F64, where(), "tensor '", name,
              "' is ", dtype_name(t.dtype), ", which does not convert to float32 (read it raw)");
  // Convert in blocks so a large tensor needs no second full-size buffer.
  constexpr uint64_t kBlock = 1 << 20;
  std::vector<std::byte> buf(std::min<uint64_t>(kBlock, t.numel) * es);
  for (uint64_t i = 0; i < t.numel; i += kBlock) {
    const uint64_t m = std::min<uint64_t>(kBlock, t.numel - i);
    file_.read_at(data_start_ + t.begin + i * es, std::span(buf.data(), m * es));
    for (uint64_t k = 0; k < m; ++k) {
      const std::byte* p = buf.data() + k * es;
      if (t.dtype == Dtype::F64) {
        double d;
        std::memcpy(&d, p, 8);
        out[i + k] = static_cast<float>(d);
      } else {
        uint16_t h;
        std::memcpy(&h, p, 2);
        out[i + k] = t.dtype == Dtype::F16 ? f16_to_f32(h) : bf16_to_f32(h);
      }
    }
  }
}

std::vector<float> Reader::read_f32(std::string_view name) const {
  std::vector<float> v(tensor(name).numel);
  read_f32(name, v);
  return v;
}

// ---------------------------------------------------------------------------------------------
// Writer

void Writer::add(std::string name, Dtype dtype, std::vector<int64_t> shape, std::span<const std::byte> data) {
  VIT_REQUIRE(!name.empty() && name != "__metadata__" && json::valid_utf8(name), "safetensors: tensor name '", name,
              "' is empty, reserved or not UTF-8");
  for (const Pending& p : tensors_) VIT_REQUIRE(p.name != name, "safetensors: tensor '", name, "' added twice");
  uint64_t numel = 1;
  for (int64_t d : shape) {
    VIT_REQUIRE(d >= 0, "safetensors: tensor '", name, "' has a negative dimension ", d);
    numel *= static_cast<uint64_t>(d);
  }
  VIT_REQUIRE(data.size() == numel * dtype_size(dtype), "safetensors: tensor '", name, "' has ", numel, " ",
              dtype_name(dtype), " elements but ", data.size(), " bytes of data");
  tensors_.push_back({std::move(name), dtype, std::move(shape), data});
}

void Writer::set_metadata(std::string key, std::string value) {
  VIT_REQUIRE(json::valid_utf8(key) && json::valid_utf8(value), "safetensors: metadata '", key, "' is not UTF-8");
  metadata_[std::move(key)] = std::move(value);
}

std::vector<const Writer::Pending*> Writer::ordered() const {
  std::vector<const Pending*> v;
  for (const Pending& p : tensors_) v.push_back(&p);
  // Larger alignment first, then by name: every tensor then starts aligned to its element size.
  std::sort(v.begin(), v.end(), [](const Pending* a, const Pending* b) {
    if (a->dtype != b->dtype) return a->dtype > b->dtype;
    return a->name < b->name;
  });
  return v;
}

std::string Writer::header() const {
  std::string h = "{";
  bool first = true;
  if (!metadata_.empty()) {
    h += "\"__metadata__\":{";
    for (auto it = metadata_.begin(); it != metadata_.end(); ++it) {
      if (it != metadata_.begin()) h += ',';
      json::append_string(h, it->first);
      h += ':';
      json::append_string(h, it->second);
    }
    h += '}';
    first = false;
  }
  uint64_t offset = 0;
  for (const Pending* p : ordered()) {
    if (!first) h += ',';
    first = false;
    json::append_string(h, p->name);
    h += ":{\"dtype\":\"";
    h += dtype_name(p->dtype);
    h += "\",\"shape\":[";
    for (size_t i = 0; i < p->shape.size(); ++i) {
      if (i) h += ',';
      h += std::to_string(p->shape[i]);
    }
    h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + p->data.size()) + "]}";
    offset += p->data.size();
  }
  h += '}';
  h.append((8 - h.size() % 8) % 8, ' ');
  return h;
}

void Writer::write(const fs::path& path) const {
  const std::string h = header();
  VIT_REQUIRE(h.size() <= kMaxHeaderBytes, "safetensors ", path.string(), ": header of ", h.size(),
              " bytes exceeds the format's limit (too many tensors)");
  const fs::path tmp = io::tmp_path(path);
  try {
    io::File f = io::File::create(tmp);
    std::byte len[8];
    for (int i = 0; i < 8; ++i) len[i] = std::byte((uint64_t(h.size()) >> (8 * i)) & 0xff);
    f.write_at(0, len);
    f.write_at(8, std::as_bytes(std::span(h.data(), h.size())));
    uint64_t at = 8 + h.size();
    for (const Pending* p : ordered()) {
      f.write_at(at, p->data);
      at += p->data.size();
    }
    f.sync();
    f.close();
    io::rename_durable(tmp, path);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
}

}  // namespace vit::safetensors
