#!/usr/bin/env python3
"""CRI calls from a reference gRPC client berth did not write: Python `grpcio` (PyPI), with stubs
generated from the CRI protos by `grpcio-tools` at run time (both pinned in /opt/berth-test-venv by
hack/install-deps.sh).

    cri_grpc.py SOCKET PROTO [--authority VALUE | --no-authority-option]

Calls RuntimeService.Version, ImageService.ImageFsInfo and RuntimeService.ListPodSandbox over
unix://SOCKET and prints one JSON object: what each call answered, or the gRPC error it got.
--authority sets the channel's `grpc.default_authority` (the `:authority` the client sends); without
it grpcio picks its own for a unix socket.
"""
import argparse
import importlib
import json
import os
import sys
import tempfile


def stubs(proto):
    from grpc_tools import protoc

    out = tempfile.mkdtemp(prefix="berth-cri-py-")
    # The stubs are generated from a copy named api.proto, so the modules are api_pb2/api_pb2_grpc.
    with open(proto, "rb") as src, open(os.path.join(out, "api.proto"), "wb") as dst:
        dst.write(src.read())
    rc = protoc.main(["protoc", f"-I{out}", f"--python_out={out}", f"--grpc_python_out={out}",
                      os.path.join(out, "api.proto")])
    if rc != 0:
        sys.exit(f"grpc_tools.protoc failed on {proto} ({rc})")
    sys.path.insert(0, out)
    return importlib.import_module("api_pb2"), importlib.import_module("api_pb2_grpc")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("proto")
    ap.add_argument("--authority")
    args = ap.parse_args()

    import grpc

    pb, rpc = stubs(args.proto)
    options = []
    if args.authority is not None:
        options.append(("grpc.default_authority", args.authority))
    result = {"grpcio": grpc.__version__}
    with grpc.insecure_channel(f"unix://{args.socket}", options=options) as ch:
        runtime = rpc.RuntimeServiceStub(ch)
        images = rpc.ImageServiceStub(ch)
        calls = {
            "version": lambda: runtime.Version(pb.VersionRequest(version="0.1.0"), timeout=10),
            "image_fs_info": lambda: images.ImageFsInfo(pb.ImageFsInfoRequest(), timeout=10),
            "list_pod_sandbox": lambda: runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=10),
        }
        for name, call in calls.items():
            try:
                r = call()
                if name == "version":
                    result[name] = {"runtime_name": r.runtime_name, "runtime_api_version": r.runtime_api_version}
                elif name == "image_fs_info":
                    result[name] = {"image_filesystems": len(r.image_filesystems)}
                else:
                    result[name] = {"items": len(r.items)}
            except grpc.RpcError as e:
                result[name] = {"error": str(e.code()), "details": e.details()}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
