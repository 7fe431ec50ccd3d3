#!/usr/bin/env python3
"""Removes DWARF debug sections (custom sections named .debug_*) from a wasm module or component,
including the core modules and components nested in a component, rewriting it in place.

    examples/strip-debug.py FILE.wasm

componentize-py leaves libpython's debug information in the components it builds (about 18 MB of
a Spin component's 37 MB); nothing at run time reads it. Function names (the `name` section) stay,
so traps still name the functions they happened in.
"""
import sys

MAGIC = b"\0asm"
CORE_MODULE, COMPONENT = 1, 4  # component section ids


def leb(data, i):
    value = shift = 0
    while True:
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def encode(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def strip(binary):
    """The binary (module or component) without debug sections, nested ones included."""
    if binary[:4] != MAGIC:
        raise ValueError("not a wasm binary")
    is_component = binary[6:8] == b"\x01\x00"  # the layer field: 1 for components
    out, i = bytearray(binary[:8]), 8
    while i < len(binary):
        section = binary[i]
        size, start = leb(binary, i + 1)
        body = binary[start:start + size]
        i = start + size
        if section == 0:
            name_len, name_at = leb(body, 0)
            if body[name_at:name_at + name_len].startswith(b".debug"):
                continue
        elif is_component and section in (CORE_MODULE, COMPONENT):
            body = strip(body)
        out += bytes([section]) + encode(len(body)) + body
    return bytes(out)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    path = sys.argv[1]
    with open(path, "rb") as f:
        before = f.read()
    after = strip(before)
    with open(path, "wb") as f:
        f.write(after)
    print(f"{path}: {len(before)} -> {len(after)} bytes")


if __name__ == "__main__":
    main()
