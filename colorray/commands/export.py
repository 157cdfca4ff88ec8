"""`colorray export`: a generator as an ONNX file with its pre- and post-processing described."""

from __future__ import annotations

from colorray.export import export


def run(args) -> None:
    info = export(args.model, args.out, tracking_uri=args.tracking_uri, opset=args.opset)
    print(f"export: {args.model} -> {args.out} (opset {info['opset']}, input L (batch, 1, H, W) with H and W "
          f"multiples of {info['stride']}, trained at {info['image_size']} px); pre- and post-processing in "
          f"{args.out}.json")
    if "logged_to_run" in info:
        print(f"export: logged to MLflow run {info['logged_to_run']} (artifacts onnx/)")
