#pragma once
// Small file helpers shared by the writers of the engine.
#include <cstddef>
#include <string>

namespace lorq {

// Writes `text` to "<path>.tmp" and renames it over `path`, so readers never see a partial file.
// Throws lorq::Error naming the file.
void write_text_atomically(const std::string& path, const std::string& text);

// A whole text file. Throws lorq::Error naming the file.
std::string read_text_file(const std::string& path);

// FNV-1a 64-bit hash as 16 hex digits (checksums of files and cache keys; not cryptographic).
std::string fnv1a64_hex(const void* data, size_t size);
// The same over a whole file, read in chunks. Throws lorq::Error naming the file.
std::string file_checksum(const std::string& path);

}  // namespace lorq
