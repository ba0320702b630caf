// A small safetensors reader for the native tests (which run on the GPU host without Node):
// reads the whole file, parses the JSON header with a minimal recursive-descent parser and
// hands out typed copies of tensors by name. Not for production loading (lib/io does that).
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace nibble_test {

struct StEntry {
  std::string dtype;  // "F32", "F16", "U8", ...
  std::vector<int64_t> shape;
  size_t begin = 0, end = 0;  // byte range inside the data section
};

class SafeTensors {
 public:
  explicit SafeTensors(const std::string& path) {
    FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) throw std::runtime_error("cannot open " + path);
    std::fseek(f, 0, SEEK_END);
    long size = std::ftell(f);
    std::fseek(f, 0, SEEK_SET);
    bytes_.resize((size_t)size);
    size_t got = std::fread(bytes_.data(), 1, bytes_.size(), f);
    std::fclose(f);
    if (got != bytes_.size() || size < 8) throw std::runtime_error("short read of " + path);
    uint64_t hlen = 0;
    std::memcpy(&hlen, bytes_.data(), 8);
    if (8 + hlen > bytes_.size()) throw std::runtime_error("bad safetensors header length in " + path);
    text_.assign(reinterpret_cast<const char*>(bytes_.data()) + 8, (size_t)hlen);
    data_ = 8 + (size_t)hlen;
    pos_ = 0;
    parse_top();
  }

  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  const StEntry& entry(const std::string& name) const {
    auto it = entries_.find(name);
    if (it == entries_.end()) throw std::runtime_error("fixture tensor missing: " + name);
    return it->second;
  }
  int64_t numel(const std::string& name) const {
    int64_t n = 1;
    for (auto d : entry(name).shape) n *= d;
    return n;
  }
  // Raw bytes of a tensor (its stored dtype).
  std::vector<uint8_t> raw(const std::string& name) const {
    const StEntry& e = entry(name);
    if (data_ + e.end > bytes_.size() || e.begin > e.end) throw std::runtime_error("bad offsets for " + name);
    return std::vector<uint8_t>(bytes_.begin() + data_ + e.begin, bytes_.begin() + data_ + e.end);
  }
  template <typename T>
  std::vector<T> get(const std::string& name, const char* want_dtype) const {
    const StEntry& e = entry(name);
    if (e.dtype != want_dtype)
      throw std::runtime_error(name + ": dtype " + e.dtype + ", expected " + want_dtype);
    std::vector<uint8_t> r = raw(name);
    std::vector<T> out(r.size() / sizeof(T));
    std::memcpy(out.data(), r.data(), out.size() * sizeof(T));
    return out;
  }

 private:
  std::vector<uint8_t> bytes_;
  std::string text_;
  size_t data_ = 0, pos_ = 0;
  std::map<std::string, StEntry> entries_;

  void ws() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' || text_[pos_] == '\t' || text_[pos_] == '\r'))
      pos_++;
  }
  void expect(char c) {
    ws();
    if (pos_ >= text_.size() || text_[pos_] != c)
      throw std::runtime_error(std::string("safetensors header: expected '") + c + "' at " + std::to_string(pos_));
    pos_++;
  }
  bool peek(char c) {
    ws();
    return pos_ < text_.size() && text_[pos_] == c;
  }
  std::string str() {
    expect('"');
    std::string s;
    while (pos_ < text_.size() && text_[pos_] != '"') {
      if (text_[pos_] == '\\') {
        pos_++;
        if (pos_ >= text_.size()) break;
        char e = text_[pos_];
        if (e == 'u') {  // keep escapes verbatim; names in our fixtures are ASCII
          s += "\\u";
        } else {
          s += (e == 'n' ? '\n' : e == 't' ? '\t' : e);
        }
        pos_++;
        continue;
      }
      s += text_[pos_++];
    }
    expect('"');
    return s;
  }
  int64_t integer() {
    ws();
    size_t start = pos_;
    if (pos_ < text_.size() && text_[pos_] == '-') pos_++;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') pos_++;
    if (start == pos_) throw std::runtime_error("safetensors header: expected a number");
    return std::stoll(text_.substr(start, pos_ - start));
  }
  std::vector<int64_t> int_list() {
    std::vector<int64_t> v;
    expect('[');
    if (peek(']')) {
      pos_++;
      return v;
    }
    for (;;) {
      v.push_back(integer());
      if (peek(',')) {
        pos_++;
        continue;
      }
      expect(']');
      return v;
    }
  }
  void skip_value() {  // any JSON value (used for __metadata__)
    ws();
    if (peek('"')) {
      str();
    } else if (peek('{')) {
      pos_++;
      if (peek('}')) { pos_++; return; }
      for (;;) {
        str();
        expect(':');
        skip_value();
        if (peek(',')) { pos_++; continue; }
        expect('}');
        return;
      }
    } else if (peek('[')) {
      pos_++;
      if (peek(']')) { pos_++; return; }
      for (;;) {
        skip_value();
        if (peek(',')) { pos_++; continue; }
        expect(']');
        return;
      }
    } else {
      while (pos_ < text_.size() && text_[pos_] != ',' && text_[pos_] != '}' && text_[pos_] != ']') pos_++;
    }
  }
  void parse_top() {
    expect('{');
    if (peek('}')) return;
    for (;;) {
      std::string name = str();
      expect(':');
      if (name == "__metadata__") {
        skip_value();
      } else {
        StEntry e;
        expect('{');
        for (;;) {
          std::string key = str();
          expect(':');
          if (key == "dtype") e.dtype = str();
          else if (key == "shape") e.shape = int_list();
          else if (key == "data_offsets") {
            auto o = int_list();
            if (o.size() != 2) throw std::runtime_error("bad data_offsets for " + name);
            e.begin = (size_t)o[0];
            e.end = (size_t)o[1];
          } else skip_value();
          if (peek(',')) { pos_++; continue; }
          expect('}');
          break;
        }
        entries_[name] = e;
      }
      if (peek(',')) { pos_++; continue; }
      expect('}');
      return;
    }
  }
};

}  // namespace nibble_test
