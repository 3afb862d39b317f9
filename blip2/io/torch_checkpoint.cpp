#include "blip2/io/torch_checkpoint.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <limits>
#include <memory>
#include <set>
#include <sstream>
#include <unordered_map>

#include "blip2/util/error.h"

#include "blip2/io/detail/pickle.h"
#include "blip2/io/detail/zip.h"

namespace blip2::io {

namespace {

using namespace detail;  // the zip container and the pickle VM (io/detail/)

// ---------------------------------------------------------------- the loader

class CheckpointReader {
 public:
  explicit CheckpointReader(const std::string& path) : path_(path), zip_(map_file(path), path) {}

  std::map<std::string, at::Tensor> load(const std::string& key);

 private:
  [[noreturn]] void fail(const std::string& what) const { throw CheckpointError(zip_.where() + ": " + what); }
  PyObj* persistent_load(Unpickler& u, PyObj* pid);
  at::Tensor storage_base(const std::string& key, const StorageDType* dt);
  at::Tensor materialize(PyObj* t);

  std::string path_;
  ZipArchive zip_;
  std::string prefix_;  // "<archive>/"
  std::map<std::pair<std::string, at::ScalarType>, at::Tensor> bases_;
};

PyObj* CheckpointReader::persistent_load(Unpickler& u, PyObj* pid) {
  // ('storage', torch.<X>Storage, key, location, numel)
  if (pid->k != K::Tuple || pid->items.size() < 5 || pid->items[0]->k != K::Str || pid->items[0]->s != "storage")
    u.fail("persistent id is " + describe(pid) + ", not a ('storage', type, key, location, numel) tuple");
  PyObj* type = pid->items[1];
  PyObj* key = pid->items[2];
  PyObj* numel = pid->items[4];
  const StorageDType* dt = nullptr;
  if (type->k == K::Global && type->s == "torch")
    dt = type->s2 == "UntypedStorage" ? by_storage_name("ByteStorage") : by_storage_name(type->s2);
  if (!dt)
    u.fail("storage type " + describe(type) +
           " is not supported (Float, Half, BFloat16, Double, Long, Int, Short, Char, Byte, Bool storages)");
  if (key->k != K::Str) u.fail("storage key is " + describe(key) + ", not a string");
  if (numel->k != K::Int || numel->i < 0) u.fail("storage numel is " + describe(numel) + ", not an int >= 0");
  const std::string entry = prefix_ + "data/" + key->s;
  const ZipEntry* e = zip_.find(entry);
  if (!e) u.fail("storage '" + key->s + "' is referenced but the archive has no entry '" + entry + "'");
  uint64_t need = 0;
  if (mul_overflows(static_cast<uint64_t>(numel->i), dt->size, &need) || e->size < need)
    u.fail("storage '" + key->s + "' should hold " + std::to_string(numel->i) + " " + dt->dtype + " elements but its entry has " +
           std::to_string(e->size) + " bytes");
  PyObj* s = u.make(K::Storage);
  s->s = key->s;
  s->dtype = dt;
  s->i = numel->i;
  return s;
}

at::Tensor CheckpointReader::storage_base(const std::string& key, const StorageDType* dt) {
  auto it = bases_.find({key, dt->scalar});
  if (it != bases_.end()) return it->second;
  const ZipEntry& e = *zip_.find(prefix_ + "data/" + key);
  const uint8_t* p = zip_.data(e);  // CRC-checked
  const int64_t numel = static_cast<int64_t>(e.size / dt->size);
  auto opts = at::TensorOptions().dtype(dt->scalar);
  if (dt->scalar == at::kBool)
    for (uint64_t j = 0; j < e.size; ++j)
      if (p[j] > 1) fail("bool storage '" + key + "' holds byte " + std::to_string(p[j]) + " at " + std::to_string(j));
  at::Tensor base;
  if (numel == 0) {
    base = at::empty({0}, opts);
  } else if (!zip_.mapping()->read_only && reinterpret_cast<uintptr_t>(p) % dt->size == 0) {
    auto keep = zip_.mapping();
    base = at::from_blob(const_cast<uint8_t*>(p), {numel}, [keep](void*) {}, opts);
  } else {
    base = at::empty({numel}, opts);
    std::memcpy(base.data_ptr(), p, static_cast<size_t>(numel) * dt->size);
  }
  bases_.emplace(std::make_pair(key, dt->scalar), base);
  return base;
}

at::Tensor CheckpointReader::materialize(PyObj* t) {
  at::Tensor base = storage_base(t->s, t->dtype);
  return base.as_strided(t->size, t->stride, t->offset);
}

std::map<std::string, at::Tensor> CheckpointReader::load(const std::string& key) {
  // The archive folder: the one holding data.pkl (torch takes the first entry's folder).
  const auto& entries = zip_.entries();
  if (entries.empty()) fail("zip archive has no entries");
  const std::string& first = entries.front().name;
  const size_t slash = first.find('/');
  if (slash == std::string::npos) fail("zip entry '" + first + "' is not inside an archive folder; not a torch.save file");
  prefix_ = first.substr(0, slash + 1);
  for (const auto& e : entries)
    if (e.name == prefix_ + "constants.pkl" || e.name.compare(0, prefix_.size() + 5, prefix_ + "code/") == 0)
      fail("a TorchScript archive (torch.jit.save), not a torch.save checkpoint; save its state_dict() with torch.save");
  const ZipEntry* pkl = zip_.find(prefix_ + "data.pkl");
  if (!pkl) fail("no '" + prefix_ + "data.pkl' entry; entries are " + join_names(zip_.names()));
  for (const char* bo : {"byteorder", ".data/byteorder"}) {
    if (const ZipEntry* e = zip_.find(prefix_ + bo)) {
      std::string order(reinterpret_cast<const char*>(zip_.data(*e)), e->size);
      if (order != "little") fail("byte order '" + order + "' is not supported (only little-endian checkpoints)");
    }
  }

  const uint8_t* data = zip_.data(*pkl);
  Unpickler u(data, pkl->size, zip_.where() + ": " + pkl->name,
              [this](Unpickler& up, PyObj* pid) { return persistent_load(up, pid); });
  PyObj* root = u.run();

  auto str_keys = [](PyObj* d) {
    std::vector<std::string> ks;
    for (PyObj* k : d->items) ks.push_back(k->k == K::Str ? k->s : "<" + describe(k) + ">");
    return ks;
  };
  auto lookup = [](PyObj* d, const std::string& k) -> PyObj* {
    PyObj* found = nullptr;  // last one wins, like a dict
    for (size_t j = 0; j < d->items.size(); ++j)
      if (d->items[j]->k == K::Str && d->items[j]->s == k) found = d->values[j];
    return found;
  };
  if (root->k != K::Dict)
    fail("the pickled object is " + describe(root) +
         ", not a dict; a whole model saved with torch.save(model) is not supported: save model.state_dict()");

  PyObj* sd = nullptr;
  std::string chosen;
  if (!key.empty()) {
    sd = lookup(root, key);
    if (!sd) fail("no entry '" + key + "' at the top level; keys found: " + join_names(str_keys(root)));
    if (sd->k != K::Dict) fail("entry '" + key + "' is " + describe(sd) + ", not a state dict");
    chosen = "entry '" + key + "'";
  } else {
    bool all_tensors = true;
    for (PyObj* v : root->values) all_tensors = all_tensors && v->k == K::Tensor;
    if (all_tensors) {
      sd = root;
      chosen = "the top-level dict";
    } else {
      for (const char* k : {"model", "state_dict"}) {
        PyObj* v = lookup(root, k);
        if (v && v->k == K::Dict) {
          sd = v;
          chosen = std::string("entry '") + k + "'";
          break;
        }
      }
      if (!sd)
        fail("no state dict found: the top-level dict is not all tensors and has no 'model' or 'state_dict' dict; "
             "keys found: " + join_names(str_keys(root)) + " (pass the key that holds it)");
    }
  }

  std::map<std::string, at::Tensor> out;
  for (size_t j = 0; j < sd->items.size(); ++j) {
    PyObj* k = sd->items[j];
    PyObj* v = sd->values[j];
    if (k->k != K::Str) fail("a state dict key (in " + chosen + ") is " + describe(k) + ", not a string");
    if (v->k != K::Tensor)
      fail("state dict entry '" + k->s + "' (in " + chosen + ") is " + describe(v) + ", not a tensor");
    out[k->s] = materialize(v);
  }
  return out;
}

}  // namespace

std::map<std::string, at::Tensor> load_torch_checkpoint(const std::string& path, const std::string& key) {
  CheckpointReader r(path);
  return r.load(key);
}

void save_torch_checkpoint(const std::string& path,
                           const std::vector<std::pair<std::string, at::Tensor>>& state_dict) {
  save_torch_checkpoint(path, state_dict, TorchSaveOptions{});
}

void save_torch_checkpoint(const std::string& path,
                           const std::vector<std::pair<std::string, at::Tensor>>& state_dict,
                           const TorchSaveOptions& options) {
  if (options.archive_name.empty() || options.archive_name.find('/') != std::string::npos)
    throw InputError("save_torch_checkpoint: archive name '" + options.archive_name + "' must be a plain folder name");
  // Group tensors by (storage, dtype): each group is written once, as the
  // span of the storage its tensors touch.
  struct Item {
    std::string name;
    at::Tensor t;
    const StorageDType* dt;
    size_t group;
    int64_t offset;  // in the written storage
  };
  struct Group {
    at::Tensor any;  // keeps the storage alive
    const StorageDType* dt;
    int64_t lo = std::numeric_limits<int64_t>::max(), hi = 0;  // element span [lo, hi)
  };
  std::vector<Item> items;
  std::vector<Group> groups;
  std::map<std::pair<const void*, at::ScalarType>, size_t> group_of;
  std::set<std::string> seen;
  for (const auto& [name, t0] : state_dict) {
    if (!seen.insert(name).second) throw InputError("save_torch_checkpoint: tensor name '" + name + "' appears twice");
    if (!t0.defined()) throw InputError("save_torch_checkpoint: tensor '" + name + "' is undefined");
    if (t0.layout() != at::kStrided || t0.is_quantized())
      throw InputError("save_torch_checkpoint: tensor '" + name + "' is not a dense strided tensor");
    const StorageDType* dt = by_scalar(t0.scalar_type());
    if (!dt)
      throw InputError("save_torch_checkpoint: tensor '" + name + "' has dtype " + std::string(c10::toString(t0.scalar_type())) +
                       ", which this writer does not support");
    at::Tensor t = t0.detach();
    if (!t.device().is_cpu()) t = t.to(at::kCPU);
    if (t.is_conj() || t.is_neg()) t = t.resolve_conj().resolve_neg();
    Item it{name, t, dt, 0, 0};
    if (t.numel() == 0) {
      it.group = groups.size();
      groups.push_back({t, dt, 0, 0});
      items.push_back(it);
      continue;
    }
    int64_t last = t.storage_offset();
    for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
    auto k = std::make_pair(static_cast<const void*>(t.storage().unsafeGetStorageImpl()), t.scalar_type());
    auto g = group_of.find(k);
    if (g == group_of.end()) {
      g = group_of.emplace(k, groups.size()).first;
      groups.push_back({t, dt});
    }
    it.group = g->second;
    Group& gr = groups[it.group];
    gr.lo = std::min(gr.lo, t.storage_offset());
    gr.hi = std::max(gr.hi, last + 1);
    items.push_back(it);
  }
  for (auto& it : items) {
    const Group& g = groups[it.group];
    it.offset = it.t.numel() == 0 ? 0 : it.t.storage_offset() - g.lo;
  }

  PickleWriter pk;
  pk.proto();
  pk.global("collections", "OrderedDict");
  pk.op(')');
  pk.op('R');
  if (!items.empty()) {
    pk.op('(');
    for (const auto& it : items) {
      const Group& g = groups[it.group];
      pk.str(it.name);
      pk.global("torch._utils", "_rebuild_tensor_v2");
      pk.op('(');
      // persistent id ('storage', torch.<X>Storage, key, 'cpu', numel)
      pk.op('(');
      pk.str("storage");
      pk.global("torch", g.dt->storage);
      pk.str(std::to_string(it.group));
      pk.str("cpu");
      pk.integer(it.t.numel() == 0 ? 0 : g.hi - g.lo);
      pk.op('t');
      pk.op('Q');
      pk.integer(it.offset);
      pk.ints(it.t.sizes());
      pk.ints(it.t.strides());
      pk.op(0x89);  // requires_grad=False
      pk.global("collections", "OrderedDict");
      pk.op(')');
      pk.op('R');
      pk.op('t');
      pk.op('R');
    }
    pk.op('u');
  }
  pk.op('.');

  try {
    FileWriter f(path);
    ZipWriter zip(f, options.force_zip64);
    const std::string pre = options.archive_name + "/";
    zip.add(pre + "data.pkl", reinterpret_cast<const uint8_t*>(pk.bytes().data()), pk.bytes().size());
    const std::string order = "little";
    zip.add(pre + "byteorder", reinterpret_cast<const uint8_t*>(order.data()), order.size());
    for (size_t gi = 0; gi < groups.size(); ++gi) {
      const Group& g = groups[gi];
      const uint64_t n = g.hi > g.lo ? static_cast<uint64_t>(g.hi - g.lo) * g.dt->size : 0;
      const uint8_t* base = n ? static_cast<const uint8_t*>(g.any.storage().data()) + static_cast<uint64_t>(g.lo) * g.dt->size : nullptr;
      zip.add(pre + "data/" + std::to_string(gi), base, n);
    }
    const std::string version = "3\n";
    zip.add(pre + "version", reinterpret_cast<const uint8_t*>(version.data()), version.size());
    zip.finish();
    f.commit();
  } catch (const CheckpointError&) {
    throw;
  } catch (const Error& e) {  // the file system's errors, from AtomicFile
    throw CheckpointError(e.what());
  }
}

}  // namespace blip2::io
