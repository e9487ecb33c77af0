# Same steps as the README's manual install: Python 3.11, libmagic, the package, run as a user.
FROM python:3.11-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmagic1 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/letterbox
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip install --no-cache-dir .
RUN useradd --system --home /data letterbox && mkdir -p /data && chown letterbox /data
USER letterbox
WORKDIR /data
VOLUME /data
# Inside a container the homeserver reaches the bridge over the container network: listen on all
# addresses (the config file's appservice.hostname is overridden). The health check asks the
# metrics listener, which stays on the container's loopback.
ENV LETTERBOX_APPSERVICE__HOSTNAME=0.0.0.0 \
    LETTERBOX_METRICS__ENABLED=true
EXPOSE 29400
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s \
    CMD ["python", "-m", "bridge", "--health", "-c", "/data/config.yaml"]
# Generate once: docker run -v $PWD/data:/data IMAGE python -m bridge -g -c config.yaml -r registration.yaml
CMD ["python", "-m", "bridge", "-c", "/data/config.yaml"]
