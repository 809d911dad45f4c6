"""A real Triton Inference Server for reenact: one python-backend model `gen_<person>` per person.

* `server`     – `TritonServer`: prepares the tritonserver shipped in the nvidia-pytriton wheel and runs it
                 on loopback with explicit model control (`python -m reenact.tritonserve` in the foreground);
                 optional TLS / mutual TLS of its gRPC endpoint (`tls_*`, `--tls-*`; HTTP is then off).
* `repository` – `export_generator_model`: writes `gen_<person>` (config.pbtxt, model.py, checkpoint) to a
                 local directory; `publish_generator_model` / `StoreModelRepository`: the same into an
                 artifact store (S3, what Triton reads as s3://...), staged then published atomically.
* `client`     – `TritonRenderer`: load / unload / render W+ latents through Triton's gRPC API (load on
                 first use; several replicas behind a dns:/// URL); `TritonTLS`: root CA / client
                 certificate / server name of a TLS channel.
* `gen_model`  – the python-backend model.py template (runs inside Triton only; never imported here).

Submodules are imported explicitly; importing this package does no work.
"""
