# syntax=docker/dockerfile:1
# Hunyuan3D-2's API server (Tencent/Hunyuan3D-2 publishes no image) for compose's `gpu`
# profile: the shape generator behind GEN3D_BACKEND=hunyuan3d, on one NVIDIA GPU. Its README's
# install steps, on a CUDA 12.4 PyTorch base. The weights are downloaded from Hugging Face at
# the first start, into the volume mounted at ~/.cache/huggingface.
#   docker build -f deploy/gpu/hunyuan3d.Dockerfile --build-arg HUNYUAN3D_REF=main deploy/gpu
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-devel
ARG HUNYUAN3D_REF=main
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
# Its weights cache is its own, so a named volume mounted there starts out writable by it.
RUN useradd --create-home --uid 10001 hunyuan \
    && mkdir -p /home/hunyuan/.cache/huggingface \
    && chown -R hunyuan:hunyuan /home/hunyuan/.cache
WORKDIR /opt/hunyuan3d
RUN git clone https://github.com/Tencent/Hunyuan3D-2.git . \
    && git checkout "${HUNYUAN3D_REF}" \
    && pip install --no-cache-dir -r requirements.txt \
    && pip install --no-cache-dir -e . \
    && mkdir gradio_cache && chown hunyuan gradio_cache
# Shape only (no --enable_tex): texturing needs the renderer extensions built for the GPU. So
# gen3d's HUNYUAN_TEXTURE stays off (its default): a textured job never ends on this server.
USER 10001:10001
EXPOSE 8081
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD ["python", "-c", "import socket; socket.create_connection(('127.0.0.1', 8081), 2)"]
CMD ["python", "api_server.py", "--host", "0.0.0.0", "--port", "8081"]
