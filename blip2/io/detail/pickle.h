// Internal to torch_checkpoint.cpp (header-only, one includer): torch's
// storage dtypes and the pickle side of torch.save files: a bounds-checked
// pickle VM for the opcodes torch.save emits (objects in an arena, tensors
// rebuilt from persistent storage references) and the writer of a plain
// OrderedDict state dict.
#pragma once

#include "blip2/io/detail/zip.h"

namespace blip2::io::detail {

// ---------------------------------------------------------------- dtypes

struct StorageDType {
  const char* storage;  // torch.<X>Storage
  const char* dtype;    // torch.<x> (and an alias)
  const char* alias;
  at::ScalarType scalar;
  size_t size;
};

inline const StorageDType kStorageDTypes[] = {
    {"FloatStorage", "float32", "float", at::kFloat, 4},
    {"HalfStorage", "float16", "half", at::kHalf, 2},
    {"BFloat16Storage", "bfloat16", "bfloat16", at::kBFloat16, 2},
    {"DoubleStorage", "float64", "double", at::kDouble, 8},
    {"LongStorage", "int64", "long", at::kLong, 8},
    {"IntStorage", "int32", "int", at::kInt, 4},
    {"ShortStorage", "int16", "short", at::kShort, 2},
    {"CharStorage", "int8", "int8", at::kChar, 1},
    {"ByteStorage", "uint8", "uint8", at::kByte, 1},
    {"BoolStorage", "bool", "bool", at::kBool, 1},
};

inline const StorageDType* by_storage_name(const std::string& n) {
  for (const auto& d : kStorageDTypes)
    if (n == d.storage) return &d;
  return nullptr;
}
inline const StorageDType* by_dtype_name(const std::string& n) {
  for (const auto& d : kStorageDTypes)
    if (n == d.dtype || n == d.alias) return &d;
  return nullptr;
}
inline const StorageDType* by_scalar(at::ScalarType t) {
  for (const auto& d : kStorageDTypes)
    if (t == d.scalar) return &d;
  return nullptr;
}

// ---------------------------------------------------------------- pickle objects

struct PyObj {
  enum class K { None, Bool, Int, BigInt, Float, Str, Bytes, Tuple, List, Dict, Set, Global, Object, Storage, Tensor };
  K k = K::None;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s, s2;            // Str/Bytes: text; Global: module, name; Object: class; Storage: key
  std::vector<PyObj*> items;    // Tuple/List/Set: items; Dict/Object: keys (Object: also args)
  std::vector<PyObj*> values;   // Dict/Object: values
  // Storage: dtype, numel. Tensor: storage (key, dtype), offset, size, stride.
  const StorageDType* dtype = nullptr;
  int64_t offset = 0;
  std::vector<int64_t> size, stride;
};
using K = PyObj::K;

inline std::string describe(const PyObj* o) {
  switch (o->k) {
    case K::None: return "None";
    case K::Bool: return "a bool";
    case K::Int: case K::BigInt: return "an int";
    case K::Float: return "a float";
    case K::Str: return "a string";
    case K::Bytes: return "bytes";
    case K::Tuple: return "a tuple";
    case K::List: return "a list";
    case K::Dict: return "a dict";
    case K::Set: return "a set";
    case K::Global: return "a reference to " + o->s + "." + o->s2;
    case K::Object: return "an object of class " + o->s;
    case K::Storage: return "a storage";
    case K::Tensor: return "a tensor";
  }
  return "?";
}

// The pickle VM. Objects live in an arena (no reference cycles to leak, no
// deep recursive destruction); every read is bounds-checked.
class Unpickler {
 public:
  using PersistentLoad = std::function<PyObj*(Unpickler&, PyObj* pid)>;

  Unpickler(const uint8_t* data, uint64_t size, std::string where, PersistentLoad pl)
      : p_(data), n_(size), where_(std::move(where)), persistent_load_(std::move(pl)) {}

  PyObj* make(K k) {
    arena_.emplace_back();
    arena_.back().k = k;
    return &arena_.back();
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw CheckpointError(where_ + ": " + what + " (at offset " + std::to_string(op_pos_) + ")");
  }

  PyObj* run();

 private:
  const uint8_t* take(uint64_t k) {
    if (k > n_ - pos_)
      fail("pickle is truncated: opcode " + hex2(op_) + " needs " + std::to_string(k) + " bytes, " +
           std::to_string(n_ - pos_) + " left");
    const uint8_t* r = p_ + pos_;
    pos_ += k;
    return r;
  }
  uint8_t u8() { return *take(1); }
  std::string line() {
    const void* nl = std::memchr(p_ + pos_, '\n', n_ - pos_);
    if (!nl) fail("pickle is truncated: opcode " + hex2(op_) + " needs a newline-terminated argument");
    const uint64_t len = static_cast<const uint8_t*>(nl) - (p_ + pos_);
    std::string s(reinterpret_cast<const char*>(take(len)), len);
    pos_++;  // the newline
    return s;
  }
  std::string bytes(uint64_t len) { return std::string(reinterpret_cast<const char*>(take(len)), len); }

  void push(PyObj* o) { stack_.push_back(o); }
  PyObj* pop() {
    if (stack_.size() <= (marks_.empty() ? 0 : marks_.back()))
      fail("pickle stack underflow at opcode " + hex2(op_));
    PyObj* o = stack_.back();
    stack_.pop_back();
    return o;
  }
  PyObj* top() {
    if (stack_.empty()) fail("pickle stack is empty at opcode " + hex2(op_));
    return stack_.back();
  }
  std::vector<PyObj*> pop_mark() {
    if (marks_.empty()) fail("opcode " + hex2(op_) + " without a MARK");
    size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PyObj*> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  PyObj* make_int(int64_t v) {
    PyObj* o = make(K::Int);
    o->i = v;
    return o;
  }
  PyObj* make_str(K k, std::string s) {
    PyObj* o = make(k);
    o->s = std::move(s);
    return o;
  }
  PyObj* make_seq(K k, std::vector<PyObj*> items) {
    PyObj* o = make(k);
    o->items = std::move(items);
    return o;
  }
  PyObj* make_long(const uint8_t* d, uint64_t len) {
    if (len == 0) return make_int(0);
    const bool neg = d[len - 1] & 0x80;
    bool fits = true;
    for (uint64_t j = 8; j < len; ++j) fits = fits && d[j] == (neg ? 0xff : 0x00);
    if (len >= 8) fits = fits && (((d[7] & 0x80) != 0) == neg);
    if (!fits) return make(K::BigInt);
    uint64_t v = neg ? ~uint64_t{0} : 0;
    for (uint64_t j = 0; j < std::min<uint64_t>(len, 8); ++j) {
      v &= ~(uint64_t{0xff} << (8 * j));
      v |= uint64_t{d[j]} << (8 * j);
    }
    return make_int(static_cast<int64_t>(v));
  }
  PyObj* memo_get(uint64_t idx) {
    auto it = memo_.find(idx);
    if (it == memo_.end()) fail("pickle memo has no entry " + std::to_string(idx));
    return it->second;
  }
  void set_items(PyObj* target, const std::vector<PyObj*>& kv) {
    if (target->k != K::Dict && target->k != K::Object)
      fail("SETITEM(S) on " + describe(target) + ", not a dict");
    if (kv.size() % 2) fail("SETITEMS with an odd number of items");
    for (size_t j = 0; j < kv.size(); j += 2) {
      target->items.push_back(kv[j]);
      target->values.push_back(kv[j + 1]);
    }
  }
  void append(PyObj* target, const std::vector<PyObj*>& items) {
    if (target->k != K::List && target->k != K::Object && target->k != K::Set)
      fail("APPEND(S) on " + describe(target) + ", not a list");
    // Objects (list subclasses) keep appended items among their args.
    target->items.insert(target->items.end(), items.begin(), items.end());
  }
  PyObj* reduce(PyObj* callable, PyObj* args);
  PyObj* rebuild_tensor(const std::string& fn, const std::vector<PyObj*>& a, const StorageDType* dtype);

  const uint8_t* p_;
  uint64_t n_;
  uint64_t pos_ = 0, op_pos_ = 0;
  uint8_t op_ = 0;
  std::string where_;
  PersistentLoad persistent_load_;
  std::deque<PyObj> arena_;
  std::vector<PyObj*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyObj*> memo_;
};

inline PyObj* Unpickler::run() {
  while (true) {
    op_pos_ = pos_;
    if (pos_ >= n_) fail("pickle is truncated: it ends without a STOP opcode");
    op_ = u8();
    switch (op_) {
      case 0x80: {  // PROTO
        uint8_t v = u8();
        if (v > 5) fail("pickle protocol " + std::to_string(v) + " is newer than 5");
        break;
      }
      case 0x95: take(8); break;  // FRAME: the length is advisory
      case '.': {  // STOP
        if (stack_.empty()) fail("STOP with an empty stack");
        return stack_.back();
      }
      case '(': marks_.push_back(stack_.size()); break;  // MARK
      case '0':  // POP
        if (!marks_.empty() && stack_.size() == marks_.back()) pop_mark();
        else pop();
        break;
      case '1': pop_mark(); break;  // POP_MARK
      case '2': push(top()); break;  // DUP
      case 'N': push(make(K::None)); break;
      case 0x88: case 0x89: {  // NEWTRUE / NEWFALSE
        PyObj* o = make(K::Bool);
        o->b = op_ == 0x88;
        push(o);
        break;
      }
      case 'J': push(make_int(static_cast<int32_t>(rd32(take(4))))); break;  // BININT
      case 'K': push(make_int(u8())); break;                                  // BININT1
      case 'M': push(make_int(rd16(take(2)))); break;                         // BININT2
      case 0x8a: {  // LONG1
        uint64_t len = u8();
        push(make_long(take(len), len));
        break;
      }
      case 0x8b: {  // LONG4
        int32_t len = static_cast<int32_t>(rd32(take(4)));
        if (len < 0) fail("LONG4 with a negative length");
        push(make_long(take(static_cast<uint64_t>(len)), static_cast<uint64_t>(len)));
        break;
      }
      case 'I': {  // INT (text)
        std::string s = line();
        if (s == "00" || s == "01") {
          PyObj* o = make(K::Bool);
          o->b = s == "01";
          push(o);
        } else {
          try {
            push(make_int(std::stoll(s)));
          } catch (const std::exception&) {
            push(make(K::BigInt));
          }
        }
        break;
      }
      case 'L': {  // LONG (text)
        std::string s = line();
        if (!s.empty() && s.back() == 'L') s.pop_back();
        try {
          push(make_int(std::stoll(s)));
        } catch (const std::exception&) {
          push(make(K::BigInt));
        }
        break;
      }
      case 'G': {  // BINFLOAT: big-endian IEEE double
        const uint8_t* d = take(8);
        uint64_t v = 0;
        for (int j = 0; j < 8; ++j) v = (v << 8) | d[j];
        PyObj* o = make(K::Float);
        std::memcpy(&o->f, &v, 8);
        push(o);
        break;
      }
      case 'F': {  // FLOAT (text)
        PyObj* o = make(K::Float);
        std::string s = line();
        o->f = std::strtod(s.c_str(), nullptr);
        push(o);
        break;
      }
      case 'X': push(make_str(K::Str, bytes(rd32(take(4))))); break;          // BINUNICODE
      case 0x8c: push(make_str(K::Str, bytes(u8()))); break;                  // SHORT_BINUNICODE
      case 0x8d: push(make_str(K::Str, bytes(rd64(take(8))))); break;         // BINUNICODE8
      case 'T': push(make_str(K::Str, bytes(rd32(take(4))))); break;          // BINSTRING (py2 str)
      case 'U': push(make_str(K::Str, bytes(u8()))); break;                   // SHORT_BINSTRING
      case 'B': push(make_str(K::Bytes, bytes(rd32(take(4))))); break;        // BINBYTES
      case 'C': push(make_str(K::Bytes, bytes(u8()))); break;                 // SHORT_BINBYTES
      case 0x8e: case 0x96: push(make_str(K::Bytes, bytes(rd64(take(8))))); break;  // BINBYTES8, BYTEARRAY8
      case 'S': case 'V': {  // STRING / UNICODE (text): kept raw, quotes stripped
        std::string s = line();
        if (op_ == 'S' && s.size() >= 2 && (s[0] == '\'' || s[0] == '"')) s = s.substr(1, s.size() - 2);
        push(make_str(K::Str, s));
        break;
      }
      case '}': push(make(K::Dict)); break;                                   // EMPTY_DICT
      case ']': push(make(K::List)); break;                                   // EMPTY_LIST
      case ')': push(make(K::Tuple)); break;                                  // EMPTY_TUPLE
      case 0x8f: push(make(K::Set)); break;                                   // EMPTY_SET
      case 't': push(make_seq(K::Tuple, pop_mark())); break;                  // TUPLE
      case 'l': push(make_seq(K::List, pop_mark())); break;                   // LIST
      case 0x91: push(make_seq(K::Set, pop_mark())); break;                   // FROZENSET
      case 'd': {                                                             // DICT
        auto kv = pop_mark();
        PyObj* d = make(K::Dict);
        set_items(d, kv);
        push(d);
        break;
      }
      case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
        size_t k = op_ - 0x84u;
        std::vector<PyObj*> items(k);
        for (size_t j = k; j-- > 0;) items[j] = pop();
        push(make_seq(K::Tuple, std::move(items)));
        break;
      }
      case 's': {  // SETITEM
        PyObj* v = pop();
        PyObj* key = pop();
        set_items(top(), {key, v});
        break;
      }
      case 'u': {  // SETITEMS
        auto kv = pop_mark();
        set_items(top(), kv);
        break;
      }
      case 'a': {  // APPEND
        PyObj* v = pop();
        append(top(), {v});
        break;
      }
      case 'e': {  // APPENDS
        auto items = pop_mark();
        append(top(), items);
        break;
      }
      case 0x90: {  // ADDITEMS
        auto items = pop_mark();
        append(top(), items);
        break;
      }
      case 'q': memo_[u8()] = top(); break;                 // BINPUT
      case 'r': memo_[rd32(take(4))] = top(); break;        // LONG_BINPUT
      case 0x94: memo_[memo_.size()] = top(); break;        // MEMOIZE
      case 'h': push(memo_get(u8())); break;                // BINGET
      case 'j': push(memo_get(rd32(take(4)))); break;       // LONG_BINGET
      case 'p': case 'g': {                                 // PUT / GET (text)
        std::string s = line();
        char* endp = nullptr;
        uint64_t idx = std::strtoull(s.c_str(), &endp, 10);
        if (s.empty() || *endp) fail("bad memo index '" + s + "'");
        if (op_ == 'p') memo_[idx] = top();
        else push(memo_get(idx));
        break;
      }
      case 'c': {  // GLOBAL
        PyObj* g = make(K::Global);
        g->s = line();
        g->s2 = line();
        push(g);
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        PyObj* name = pop();
        PyObj* module = pop();
        if (module->k != K::Str || name->k != K::Str) fail("STACK_GLOBAL on non-string operands");
        PyObj* g = make(K::Global);
        g->s = module->s;
        g->s2 = name->s;
        push(g);
        break;
      }
      case 'R': {  // REDUCE
        PyObj* args = pop();
        PyObj* callable = pop();
        push(reduce(callable, args));
        break;
      }
      case 0x81: {  // NEWOBJ: cls.__new__(cls, *args)
        PyObj* args = pop();
        PyObj* cls = pop();
        if (cls->k == K::Global && cls->s == "collections" && cls->s2 == "OrderedDict") {
          push(make(K::Dict));
        } else {
          PyObj* o = make(K::Object);
          o->s = cls->k == K::Global ? cls->s + "." + cls->s2 : "<unknown>";
          if (args->k == K::Tuple) o->items = args->items;
          push(o);
        }
        break;
      }
      case 0x92: {  // NEWOBJ_EX
        pop();  // kwargs
        pop();  // args
        PyObj* cls = pop();
        PyObj* o = make(K::Object);
        o->s = cls->k == K::Global ? cls->s + "." + cls->s2 : "<unknown>";
        push(o);
        break;
      }
      case 'i': {  // INST (protocol 0): module, name, args after MARK
        std::string module = line(), name = line();
        pop_mark();
        PyObj* o = make(K::Object);
        o->s = module + "." + name;
        push(o);
        break;
      }
      case 'o': {  // OBJ (protocol 1): class and args after MARK
        auto items = pop_mark();
        if (items.empty()) fail("OBJ without a class");
        PyObj* o = make(K::Object);
        o->s = items[0]->k == K::Global ? items[0]->s + "." + items[0]->s2 : "<unknown>";
        push(o);
        break;
      }
      case 'b': pop(); top(); break;  // BUILD: state ignored (OrderedDict _metadata, object __dict__)
      case 'Q': {                     // BINPERSID
        PyObj* pid = pop();
        push(persistent_load_(*this, pid));
        break;
      }
      case 'P': {  // PERSID (text)
        PyObj* pid = make_str(K::Str, line());
        push(persistent_load_(*this, pid));
        break;
      }
      default:
        fail("unsupported pickle opcode " + hex2(op_));
    }
  }
}

inline PyObj* Unpickler::reduce(PyObj* callable, PyObj* args) {
  const std::string fn = callable->k == K::Global ? callable->s + "." + callable->s2 : "";
  const std::vector<PyObj*> no_args;
  const std::vector<PyObj*>& a = args->k == K::Tuple ? args->items : no_args;
  if (fn == "collections.OrderedDict" || fn == "builtins.dict" || fn == "__builtin__.dict") {
    PyObj* d = make(K::Dict);
    // OrderedDict([(k, v), ...]) form.
    if (!a.empty() && a[0]->k == K::List)
      for (PyObj* kv : a[0]->items)
        if (kv->k == K::Tuple && kv->items.size() == 2) set_items(d, kv->items);
    return d;
  }
  if (fn == "torch._utils._rebuild_tensor_v2" || fn == "torch._utils._rebuild_tensor")
    return rebuild_tensor(fn, a, nullptr);
  if (fn == "torch._utils._rebuild_tensor_v3") {
    // (storage, offset, size, stride, requires_grad, hooks, dtype, metadata)
    const StorageDType* dt = nullptr;
    if (a.size() >= 7 && a[6]->k == K::Global && a[6]->s == "torch") dt = by_dtype_name(a[6]->s2);
    if (!dt)
      fail(fn + ": dtype " + (a.size() >= 7 ? describe(a[6]) : std::string("missing")) +
           " is not supported (float32/16/64, bfloat16, int8/16/32/64, uint8, bool)");
    return rebuild_tensor(fn, a, dt);
  }
  if (fn == "torch._utils._rebuild_parameter" || fn == "torch._utils._rebuild_parameter_with_state") {
    if (a.empty() || a[0]->k != K::Tensor) fail(fn + " without a tensor argument");
    return a[0];
  }
  PyObj* o = make(K::Object);
  o->s = fn.empty() ? "<result of calling " + describe(callable) + ">" : fn;
  return o;
}

inline PyObj* Unpickler::rebuild_tensor(const std::string& fn, const std::vector<PyObj*>& a, const StorageDType* dtype) {
  auto bad = [&](const std::string& what) { fail(fn + ": " + what); };
  if (a.size() < 4) bad("expected (storage, offset, size, stride, ...), got " + std::to_string(a.size()) + " arguments");
  PyObj* st = a[0];
  if (st->k != K::Storage) bad("first argument is " + describe(st) + ", not a storage");
  if (a[1]->k != K::Int || a[1]->i < 0) bad("storage offset is " + describe(a[1]) + ", not an int >= 0");
  auto ints = [&](PyObj* t, const char* what) {
    if (t->k != K::Tuple) bad(std::string(what) + " is " + describe(t) + ", not a tuple");
    std::vector<int64_t> v;
    for (PyObj* x : t->items) {
      if (x->k != K::Int || x->i < 0) bad(std::string(what) + " holds " + describe(x) + ", not an int >= 0");
      v.push_back(x->i);
    }
    return v;
  };
  PyObj* t = make(K::Tensor);
  t->s = st->s;
  t->offset = a[1]->i;
  t->size = ints(a[2], "size");
  t->stride = ints(a[3], "stride");
  if (t->size.size() != t->stride.size())
    bad("size " + shape_str(t->size) + " and stride " + shape_str(t->stride) + " differ in length");
  // Storage numel in the tensor's dtype (rebuild_v3 reinterprets an untyped storage).
  t->dtype = dtype ? dtype : st->dtype;
  uint64_t storage_bytes = 0;
  if (mul_overflows(static_cast<uint64_t>(st->i), st->dtype->size, &storage_bytes)) bad("storage size overflows");
  const uint64_t numel_here = storage_bytes / t->dtype->size;
  bool empty = false;
  uint64_t last = static_cast<uint64_t>(t->offset);  // highest element index touched
  for (size_t d = 0; d < t->size.size(); ++d) {
    if (t->size[d] == 0) empty = true;
    uint64_t span = 0;
    if (t->size[d] > 0 && mul_overflows(static_cast<uint64_t>(t->size[d] - 1), static_cast<uint64_t>(t->stride[d]), &span))
      bad("size/stride overflow");
    if (last > UINT64_MAX - span) bad("size/stride overflow");
    last += span;
  }
  uint64_t numel = 1;
  for (auto s : t->size)
    if (mul_overflows(numel, static_cast<uint64_t>(s), &numel)) bad("size overflows");
  const bool fits = empty ? static_cast<uint64_t>(t->offset) <= numel_here : last < numel_here;
  if (!fits)
    bad("tensor of size " + shape_str(t->size) + ", stride " + shape_str(t->stride) + ", offset " +
        std::to_string(t->offset) + " extends past its storage '" + st->s + "' of " + std::to_string(numel_here) +
        " elements");
  return t;
}

class PickleWriter {
 public:
  void proto() { b_.u8(0x80); b_.u8(2); }
  void global(const std::string& module, const std::string& name) {
    b_.u8('c');
    b_.str(module + "\n" + name + "\n");
  }
  void str(const std::string& s) {
    b_.u8('X');
    b_.u32(static_cast<uint32_t>(s.size()));
    b_.str(s);
  }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      b_.u8('K');
      b_.u8(static_cast<uint8_t>(v));
    } else if (v >= std::numeric_limits<int32_t>::min() && v <= std::numeric_limits<int32_t>::max()) {
      b_.u8('J');
      b_.u32(static_cast<uint32_t>(static_cast<int32_t>(v)));
    } else {
      b_.u8(0x8a);  // LONG1, 8 bytes two's complement
      b_.u8(8);
      b_.u64(static_cast<uint64_t>(v));
    }
  }
  void ints(at::IntArrayRef v) {
    op('(');
    for (auto x : v) integer(x);
    op('t');
  }
  void op(uint8_t o) { b_.u8(o); }
  const std::string& bytes() const { return b_.b; }

 private:
  Bytes b_;
};


}  // namespace blip2::io::detail
