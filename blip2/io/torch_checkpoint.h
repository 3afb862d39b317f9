// PyTorch checkpoints (.pth / .pt / .bin written by torch.save) without Python.
//
// Only the zip format (PyTorch >= 1.6, the default of torch.save) is read:
// an uncompressed zip archive holding
//   <archive>/data.pkl     the pickled object (protocol 2)
//   <archive>/data/<key>   one raw little-endian storage per key
//   <archive>/version      ("3\n"), sometimes <archive>/byteorder ("little")
// The pickle is run by a small VM of our own: tensors are rebuilt from their
// storages (views of one storage stay views of one buffer), collections become
// dicts/lists, and any other Python object (argparse.Namespace, numpy scalars,
// optimizer classes, ...) becomes an opaque placeholder, so that a LAVIS
// checkpoint's "config" / "optimizer" entries never stop the load of its
// "model" entry.
//
// Storages are memory-mapped copy-on-write: an aligned storage is handed out
// without a copy (the result is writable; writes stay private to the process),
// an unaligned one is copied. Every malformed input is a CheckpointError naming
// the file and what was found.
#pragma once

#include <torch/types.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace blip2::io {

// The state dict of a torch.save file, on CPU, in its stored dtypes.
//
// `key` picks the entry holding the state dict: "" (auto) takes the top-level
// dict itself when all of its values are tensors, else its "model" entry, else
// its "state_dict" entry. A named key must exist at the top level. Every value
// of the chosen dict must be a tensor (a CheckpointError names the first one
// that is not); errors list the top-level keys found.
std::map<std::string, at::Tensor> load_torch_checkpoint(const std::string& path,
                                                        const std::string& key = "");

struct TorchSaveOptions {
  // Writes ZIP64 records for every entry even when nothing needs them (files
  // over 4 GiB get them regardless). For tests of the ZIP64 path.
  bool force_zip64 = false;
  // The folder name inside the zip ("archive" like PyTorch >= 2.0).
  std::string archive_name = "archive";
};

// Writes `state_dict` as a plain OrderedDict state dict that torch.load reads
// (zip format, stored entries, storages 64-byte aligned, CRC-32 filled in),
// atomically (a temporary file beside `path` is renamed over it).
// Tensors that share a storage are written once and come back as views of it,
// as with torch.save. Non-CPU tensors are copied to the CPU. Throws
// InputError for dtypes a PyTorch storage cannot name (complex, quantized)
// and CheckpointError for I/O failures.
void save_torch_checkpoint(const std::string& path,
                           const std::vector<std::pair<std::string, at::Tensor>>& state_dict);
void save_torch_checkpoint(const std::string& path,
                           const std::vector<std::pair<std::string, at::Tensor>>& state_dict,
                           const TorchSaveOptions& options);

}  // namespace blip2::io
