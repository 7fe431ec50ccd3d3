"""Writes an OCI image layout tarball of a small Linux image for container functions: Debian's
busybox-static with its common applets, an empty /tmp (mode 1777: runc gives a tmpfs the mode of the
directory it is mounted on), and the files of app/ under /app (a job's scripts, a server's site).

    apt install busybox-static
    python3 examples/container/image.py busybox.tar

It is what README's container example deploys, and what bench/containerd/ runs with runc.
"""

import hashlib
import io
import json
import os
import sys
import tarfile

BUSYBOX = "/bin/busybox"
NAME = "docker.io/library/wafer-busybox:example"
APPLETS = ("sh", "cat", "echo", "printf", "id", "env", "sleep", "true", "wc", "nc", "httpd", "dd", "head", "wget")
APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "app")


def add(tar: tarfile.TarFile, name: str, data: bytes = b"", kind=tarfile.REGTYPE, mode=0o644, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.linkname = kind, mode, len(data), link
    tar.addfile(info, io.BytesIO(data) if data else None)


def rootfs() -> bytes:
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        add(tar, "bin", kind=tarfile.DIRTYPE, mode=0o755)
        add(tar, "tmp", kind=tarfile.DIRTYPE, mode=0o1777)
        with open(BUSYBOX, "rb") as f:
            add(tar, "bin/busybox", f.read(), mode=0o755)
        for applet in APPLETS:
            add(tar, f"bin/{applet}", kind=tarfile.SYMTYPE, link="busybox")
        add(tar, "app", kind=tarfile.DIRTYPE, mode=0o755)
        for top, dirs, files in os.walk(APP):
            dirs.sort()
            inside = os.path.relpath(top, APP)
            for name in dirs:
                add(tar, os.path.normpath(f"app/{inside}/{name}"), kind=tarfile.DIRTYPE, mode=0o755)
            for name in sorted(files):
                path = os.path.join(top, name)
                mode = 0o755 if os.access(path, os.X_OK) else 0o644
                with open(path, "rb") as f:
                    add(tar, os.path.normpath(f"app/{inside}/{name}"), f.read(), mode=mode)
    return layer.getvalue()


def main(out: str) -> None:
    blobs = {}

    def blob(data: bytes) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    layer = blob(rootfs())
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"], "WorkingDir": "/app"},
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(json.dumps(config).encode())},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
    }
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **blob(json.dumps(manifest).encode()),
                "platform": {"os": "linux", "architecture": "amd64"},
                "annotations": {"io.containerd.image.name": NAME, "org.opencontainers.image.ref.name": "example"},
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
