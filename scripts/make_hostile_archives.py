#!/usr/bin/env python3
"""Writes the hostile-input corpus of `cargo xtask fetch` (standard library only):
tests/fixtures/hostile/fetch/

  zip/*.zip       archives the unpacker must refuse: paths leaving the target
                  (zip slip), links, repeated paths, a path that is both a file
                  and a folder, decompression bombs (by declared size, and by an
                  entry that inflates past the size it declares), an entry
                  shorter than it declares, a central directory that lies about
                  its entry count, a file that is no zip at all
  manifest/*.toml download manifests the parser must refuse
  lock/*.toml     lock files the parser must refuse

Each case must end in an error naming the file, never a panic or an abort
(xtask/src/fetch/tests.rs, `the_hostile_fetch_corpus_is_refused_with_errors_naming_the_file`). Small by
construction: the bombs are a few kB.

    python3 scripts/make_hostile_archives.py
"""

import io
import stat
import struct
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hostile" / "fetch"


def zip_of(entries, method=zipfile.ZIP_DEFLATED):
    """entries: (name, bytes) or (ZipInfo, bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method) as z:
        for name, data in entries:
            # A fixed date (ZipInfo's default), so the files are reproducible.
            info = name if isinstance(name, zipfile.ZipInfo) else zipfile.ZipInfo(name)
            info.compress_type = method
            z.writestr(info, data)
    return bytearray(buf.getvalue())


def patch_central_size(data, size):
    """Rewrites the first central-directory entry's uncompressed size."""
    at = data.index(b"PK\x01\x02")
    data[at + 24 : at + 28] = struct.pack("<I", size)
    return data


def symlink(name, target):
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix: external_attr carries st_mode
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return (info, target.encode())


def zips():
    ok = ("DS/objectInfo150.txt", b"Idx\tName\n1\twall\n")
    cases = {
        "slip_dotdot": [ok, ("DS/../../evil.txt", b"gotcha")],
        "slip_absolute": [ok, ("/tmp/sae-steer-evil.txt", b"gotcha")],
        "slip_backslash": [ok, ("DS\\..\\..\\evil.txt", b"gotcha")],
        "slip_symlink": [ok, symlink("DS/link", "/etc/passwd")],
        "duplicate_path": [ok, ("DS/a.txt", b"one"), ("DS/./a.txt", b"two")],
        "file_and_folder": [ok, ("DS/x", b"file"), ("DS/x/y", b"inside")],
        # 16 MiB of zeros: about 16 kB deflated, a thousand times the archive.
        "bomb_declared": [("DS/bomb.bin", bytes(16 << 20)), ok],
    }
    out = {name: zip_of(entries) for name, entries in cases.items()}
    # 1 MiB of zeros that declares 100 bytes: only the inflating stops it.
    out["bomb_lying_size"] = patch_central_size(zip_of([("DS/bomb.bin", bytes(1 << 20)), ok]), 100)
    # Declares more than it holds.
    out["short_entry"] = patch_central_size(zip_of([("DS/short.bin", b"abc"), ok]), 1000)
    # End of central directory: 65,535 entries claimed in a 22-byte file.
    out["lying_entry_count"] = bytearray(
        struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0, 0, 0)
    )
    out["not_a_zip"] = bytearray(b"<html>404 Not Found</html>\n")
    return out


BASE = 'name = "x"\ndescription = "hostile"\n'
ARCHIVE = '[[archive]]\nurl = "https://h/x.zip"\nfile = "x.zip"\nroot = "X"\n'

MANIFESTS = {
    "layout_outside_folder": BASE + ARCHIVE + '[archive.layout]\nfiles = ["../../etc/passwd"]\n',
    "root_absolute": BASE
    + '[[archive]]\nurl = "https://h/x.zip"\nfile = "x.zip"\nroot = "/etc"\n[archive.layout]\n',
    "file_with_slash": BASE
    + '[[archive]]\nurl = "https://h/x.zip"\nfile = "../x.zip"\nroot = "X"\n[archive.layout]\n',
    "dest_outside_folder": BASE + '[[url]]\nurl = "https://h/x"\ndest = "../../x"\n',
    "http_unpinned": BASE + '[[url]]\nurl = "http://h.example/x"\ndest = "x"\n',
    "scheme_file": BASE + '[[url]]\nurl = "file:///etc/passwd"\ndest = "x"\n',
    "url_userinfo": BASE + '[[url]]\nurl = "https://127.0.0.1@evil.example/x"\ndest = "x"\n',
    "hub_revision_absolute": BASE + '[[hub]]\nrepo = "a/b"\nrevision = "/etc"\nfiles = [{ name = "c" }]\n',
    "hub_revision_dotdot": BASE + '[[hub]]\nrepo = "a/b"\nrevision = "a/../../x"\nfiles = [{ name = "c" }]\n',
    "hub_file_query": BASE + '[[hub]]\nrepo = "a/b"\nfiles = [{ name = "c?download=evil" }]\n',
    "hub_repo_dotdot": BASE + '[[hub]]\nrepo = "../b"\nfiles = [{ name = "c" }]\n',
    "sha256_upper_case": BASE + ARCHIVE + 'sha256 = "' + "A" * 64 + '"\n[archive.layout]\n',
    "size_negative": BASE + ARCHIVE + "size = -1\n[archive.layout]\n",
    "size_huge": BASE + ARCHIVE + "size = 99999999999999999999999\n[archive.layout]\n",
    "unknown_key": BASE + ARCHIVE + "sha265 = \"typo\"\n[archive.layout]\n",
    "nothing_to_fetch": BASE,
    "not_toml": "\x00\x01name = [[[\n",
}

HASH = "0" * 63 + "1"
LOCKS = {
    "sha256_short": '[url."https://h/x"]\nsize = 1\nsha256 = "abc"\n',
    "commit_dotdot": '[hub."a/b"]\nrevision = "main"\ncommit = "../../../etc"\n',
    "commit_slash": '[hub."a/b"]\nrevision = "main"\ncommit = "a/b"\n',
    "commit_empty": '[hub."a/b"]\nrevision = "main"\ncommit = ""\n',
    "size_negative": '[url."https://h/x"]\nsize = -5\nsha256 = "' + HASH + '"\n',
    "unknown_key": '[url."https://h/x"]\nsize = 1\nsha256 = "' + HASH + '"\ntrusted = true\n',
    "not_toml": "[url.\n",
}


def main():
    for sub, files in (
        ("zip", {f"{k}.zip": bytes(v) for k, v in zips().items()}),
        ("manifest", {f"{k}.toml": v.encode() for k, v in MANIFESTS.items()}),
        ("lock", {f"{k}.toml": v.encode() for k, v in LOCKS.items()}),
    ):
        folder = OUT / sub
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        print(f"{folder}: {len(files)} files, {sum(len(d) for d in files.values())} bytes")


if __name__ == "__main__":
    main()
