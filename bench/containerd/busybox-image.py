"""Writes an OCI image layout tarball of busybox (from Debian's busybox-static) for the cold-start
comparison: the smallest ordinary Linux container, run by runc.

    python3 busybox-image.py busybox.tar
"""

import hashlib
import io
import json
import sys
import tarfile

BUSYBOX = "/bin/busybox"
NAME = "docker.io/library/busybox:bench"


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind=tarfile.REGTYPE, mode=0o644, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, len(data), link
    tar.addfile(info, io.BytesIO(data) if data else None)


def main(out: str) -> None:
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as rootfs:
        add(rootfs, "bin", kind=tarfile.DIRTYPE, mode=0o755)
        with open(BUSYBOX, "rb") as f:
            add(rootfs, "bin/busybox", f.read(), mode=0o755)
        for applet in ("sh", "echo", "true", "wc"):
            add(rootfs, f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox")
    blobs = {}

    def blob(data: bytes) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    layer_desc = blob(layer.getvalue())
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(json.dumps(config).encode())},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_desc}],
    }
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **blob(json.dumps(manifest).encode()),
                "platform": {"os": "linux", "architecture": "amd64"},
                "annotations": {"io.containerd.image.name": NAME, "org.opencontainers.image.ref.name": "bench"},
            }
        ],
    }
    with tarfile.open(out, "w") as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add(tar, "index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            add(tar, "blobs/sha256/" + digest.split(":")[1], data)


if __name__ == "__main__":
    main(sys.argv[1])
