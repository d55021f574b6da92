"""A small zip writer that copies members of another zip raw (compressed bytes untouched).

zipfile can only add members by recompressing them; for a 433 MB wheel of which a few
dozen small files change, copying the compressed bytes is ~100x cheaper and keeps every
untouched member byte-identical to upstream's. No zip64: wheels here are < 4 GiB.
"""

import hashlib
import struct
import time
import zipfile
import zlib
from typing import BinaryIO

_LOCAL = struct.Struct("<4s2B4HL2L2H")
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_END = struct.Struct("<4s4H2LH")
_UTF8 = 0x800
_CHUNK = 4 << 20


def data_span(fp: BinaryIO, info: zipfile.ZipInfo) -> tuple[int, int]:
    """(offset, length) of the member's compressed data inside the archive file."""
    fp.seek(info.header_offset)
    header = _LOCAL.unpack(fp.read(_LOCAL.size))
    if header[0] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"{info.filename}: bad local header")
    return info.header_offset + _LOCAL.size + header[10] + header[11], info.compress_size


def dos_time(date_time: tuple) -> tuple[int, int]:
    y, mo, d, h, mi, s = date_time[:6]
    return (h << 11) | (mi << 5) | (s // 2), ((y - 1980) << 9) | (mo << 5) | d


def epoch_to_date_time(epoch: int) -> tuple:
    return tuple(time.gmtime(max(epoch, 315532800))[:6])  # zip cannot express < 1980


class RawZipWriter:
    """Write a zip sequentially; `sha256` is the digest of everything written."""

    def __init__(self, fp: BinaryIO):
        self.fp, self.offset, self.central = fp, 0, []
        self.sha256 = hashlib.sha256()

    def _write(self, data: bytes) -> None:
        self.fp.write(data)
        self.sha256.update(data)
        self.offset += len(data)

    def _header(self, name: str, like: zipfile.ZipInfo, crc: int, csize: int, usize: int,
                compress_type: int, date_time: tuple) -> None:
        encoded = name.encode("utf-8")
        flags = (like.flag_bits & ~0x8) | (_UTF8 if not name.isascii() else 0)
        t, d = dos_time(date_time)
        self.central.append(_CENTRAL.pack(
            b"PK\x01\x02", like.create_version, like.create_system, like.extract_version, 0,
            flags, compress_type, t, d, crc, csize, usize, len(encoded), 0, 0, 0,
            like.internal_attr, like.external_attr, self.offset) + encoded)
        self._write(_LOCAL.pack(b"PK\x03\x04", like.extract_version, 0, flags, compress_type,
                                t, d, crc, csize, usize, len(encoded), 0) + encoded)

    def copy_raw(self, src: BinaryIO, info: zipfile.ZipInfo, name: str | None = None,
                 ) -> tuple[int, int]:
        """Copy member `info` of the open archive `src` without recompressing it: its data's
        offset in `src` and in the new archive. `src` is read forward (read1: the views of
        overlay.UpstreamStream are written as they are, uncopied)."""
        offset, length = data_span(src, info)
        self._header(name or info.filename, info, info.CRC, info.compress_size,
                     info.file_size, info.compress_type, info.date_time)
        src.seek(offset)
        out_offset = self.offset
        while length:
            chunk = src.read1(min(_CHUNK, length))
            if not chunk:
                raise zipfile.BadZipFile(f"{info.filename}: truncated member data")
            self._write(chunk)
            length -= len(chunk)
        return offset, out_offset

    def add(self, name: str, data: bytes, date_time: tuple, like: zipfile.ZipInfo | None = None,
            ) -> None:
        """Add a new member, deflated (level 9, deterministic for a given zlib)."""
        if like is None:
            like = zipfile.ZipInfo(name)
            like.create_system, like.create_version, like.extract_version = 3, 20, 20
            like.external_attr = 0o100644 << 16
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        packed = compressor.compress(data) + compressor.flush()
        self._header(name, like, zlib.crc32(data), len(packed), len(data), zipfile.ZIP_DEFLATED,
                     date_time)
        self._write(packed)

    def close(self) -> None:
        start = self.offset
        for record in self.central:
            self._write(record)
        count = len(self.central)
        if count >= 0xFFFF or self.offset >= 0xFFFFFFFF:
            raise ValueError("archive needs zip64, which this writer does not produce")
        self._write(_END.pack(b"PK\x05\x06", 0, 0, count, count, self.offset - start, start, 0))
