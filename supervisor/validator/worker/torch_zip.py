"""The torch zip format: central directory, local headers, record CRCs, and the regions of the data pass."""

from __future__ import annotations

import os
import re
import struct
import zipfile
from dataclasses import dataclass

import torch

from supervisor.validator.worker.content import (
    Rejected,
    check_content,
)
from supervisor.validator.worker.crc import crc32
from supervisor.validator.worker.data_pass import Owner, Region, data_pass, nonfinite_reason
from supervisor.validator.worker.job import ZIP_MAGIC, Job
from supervisor.validator.worker.torch_load import torch_load
from supervisor.validator.worker.walk import collect_owners

LOCAL_HEADER = struct.Struct("<4s5H3I2H")


# --- torch zip ----------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    name: str
    offset: int  # of the data
    size: int
    crc: int


def zip_records(job: Job) -> list[Record]:
    """The archive's records from its central directory, each local header checked."""
    try:
        with os.fdopen(os.dup(job.fd), "rb") as handle, zipfile.ZipFile(handle) as archive:
            infos = archive.infolist()
            directory_at = int(getattr(archive, "start_dir", job.size))
    except zipfile.BadZipFile as exc:
        if str(exc) == "File is not a zip file":  # no end-of-central-directory record
            raise Rejected("truncated: no zip central directory") from None
        raise Rejected(f"corrupt zip: {exc}") from None
    return [_local_record(job.fd, info, directory_at) for info in infos]


def _local_record(fd: int, info: zipfile.ZipInfo, directory_at: int) -> Record:
    header = os.pread(fd, LOCAL_HEADER.size, info.header_offset)
    if len(header) != LOCAL_HEADER.size or LOCAL_HEADER.unpack(header)[0] != ZIP_MAGIC:
        raise Rejected(f"corrupt zip: bad local header of record {info.filename}")
    *_, name_length, extra_length = LOCAL_HEADER.unpack(header)
    name_at = info.header_offset + LOCAL_HEADER.size
    encoding = "utf-8" if info.flag_bits & 0x800 else "cp437"  # as zipfile decoded it
    if os.pread(fd, name_length, name_at) != info.orig_filename.encode(encoding, "surrogateescape"):
        raise Rejected(f"corrupt zip: local header of record {info.filename} names another file")
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise Rejected(f"record {info.filename} is compressed: not written by torch.save")
    offset = name_at + name_length + extra_length
    if offset + info.file_size > directory_at:
        raise Rejected(f"corrupt zip: record {info.filename} runs past its end")
    return Record(info.filename, offset, info.file_size, info.CRC)


def _check_torch_zip(job: Job) -> None:
    records = zip_records(job)
    names = {r.name for r in records}
    prefixes = {n.partition("/")[0] for n in names if n.count("/") == 1 and n.endswith("/data.pkl")}
    if len(prefixes) != 1:
        raise Rejected("not a torch checkpoint: zip without one <archive>/data.pkl")
    prefix = prefixes.pop()
    if f"{prefix}/constants.pkl" in names:
        raise Rejected("TorchScript archive, not a checkpoint")
    crc_enabled = any(r.crc for r in records if r.size)
    if not crc_enabled:
        job.notes.append("CRC-32 disabled by the writer: record data not verified")
    is_data = re.compile(re.escape(prefix) + r"/data/\d+").fullmatch
    data = [r for r in records if is_data(r.name)]
    small = [r for r in records if not is_data(r.name)]
    # The small records first: damage to data.pkl is reported as damage, not as a pickle error.
    small_crcs = data_pass(job.fd, [Region(r.offset, r.size) for r in small]).crcs
    if crc_enabled:
        _compare_crcs(small, small_crcs)
    root = torch_load(job, mmap=True)
    job.take(check_content(job.request, root))
    owners = collect_owners(root, job.request.finite_except) if job.request.check_finite else []
    result = data_pass(job.fd, _regions_for_records(job, data, owners))
    data_crcs = result.crcs[: len(data)]  # the regions of the records come first
    if crc_enabled:
        _compare_crcs(data, data_crcs)
    computed = dict(zip([r.name for r in small + data], small_crcs + data_crcs, strict=True))
    job.checksum = f"{crc32(b''.join(struct.pack('<I', computed[r.name]) for r in records), 0):08x}"
    reason = nonfinite_reason(result.flagged)
    if reason is not None:
        raise Rejected(reason)


def _compare_crcs(records: list[Record], crcs: list[int]) -> None:
    for record, crc in zip(records, crcs, strict=True):
        if crc != record.crc:
            raise Rejected(f"CRC mismatch in record {record.name}")


def _regions_for_records(job: Job, records: list[Record], owners: list[Owner]) -> list[Region]:
    """One region per data record, in order. Where torch's mapping of the file holds a
    storage at the record's data offset, the region's bytes are also checked as that
    storage's values (they are the same bytes: read once). Owners found nowhere (torch
    did not map the file after all?) get a values-only region each, after the records."""
    assert job.stat is not None
    mappings = _file_mappings(job.stat)
    by_offset = {r.offset: r for r in records}
    owner_at: dict[str, Owner] = {}
    loose: list[Owner] = []
    for owner in owners:
        offset = _file_offset(mappings, owner.values)
        record = by_offset.get(offset) if offset is not None else None
        if record is None:
            loose.append(owner)
            continue
        nbytes = owner.values.untyped_storage().nbytes()
        if nbytes != record.size:
            raise Rejected(
                f"corrupt: record {record.name} holds {record.size} bytes, its tensor needs {nbytes}"
            )
        owner_at[record.name] = owner
    regions = [Region(r.offset, r.size, owner_at.get(r.name)) for r in records]
    return regions + [_in_memory(owner) for owner in loose]


def _in_memory(owner: Owner) -> Region:
    return Region(0, owner.values.untyped_storage().nbytes(), owner=owner, read=False)


def _file_mappings(st: os.stat_result) -> list[tuple[int, int, int]]:
    """(start, end, file offset) of every mapping of this file in our address space."""
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    found = []
    with open("/proc/self/maps", errors="surrogateescape") as maps:  # (file names need not be UTF-8)
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) >= 5 and fields[4] == str(st.st_ino) and fields[3] == device:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                found.append((start, end, int(fields[2], 16)))
    return found


def _file_offset(mappings: list[tuple[int, int, int]], values: torch.Tensor) -> int | None:
    address, nbytes = values.data_ptr(), values.untyped_storage().nbytes()
    for start, end, offset in mappings:
        if start <= address and address + nbytes <= end:
            return address - start + offset
    return None


# --- legacy torch.save --------------------------------------------------------------


def _check_torch_legacy(job: Job) -> None:
    root = torch_load(job, mmap=False)
    job.take(check_content(job.request, root))
    owners = collect_owners(root, job.request.finite_except) if job.request.check_finite else []
    # The storages are in memory (never mmap: torch cannot), the whole file's CRC is the
    # checksum: one pass for both, the file's pages still in the page cache.
    regions = [Region(0, job.size)]
    regions += [_in_memory(owner) for owner in owners]
    result = data_pass(job.fd, regions)
    job.checksum = f"{result.crcs[0]:08x}"
    reason = nonfinite_reason(result.flagged)
    if reason is not None:
        raise Rejected(reason)
