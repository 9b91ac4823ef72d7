# syntax=docker/dockerfile:1
# The Tributary server image: the `tributary` binary, the bundled plugins (helm, catalog) and the
# example catalog. Build:   docker build -t tributary .
# Run the example catalog:  docker run --rm -p 50051:50051 tributary
# Serve your own plugins:   mount a folder of lib*.so files (owned by root, not writable by group or
# others) at /plugins and a config at /etc/tributary/tributary.toml; see deploy/README.md.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
        -p tributary-host -p tributary-plugin-helm -p tributary-plugin-catalog \
 && mkdir -p /out/plugins \
 && cp target/release/tributary /out/ \
 && cp target/release/libtributary_plugin_helm.so target/release/libtributary_plugin_catalog.so /out/plugins/

# The bundled plugins alone, as an image to mount read-only at the plugin directory (Kubernetes image
# volume; see deploy/kubernetes/deployment.yaml). Build: docker build --target plugins -t tributary-plugins .
FROM scratch AS plugins
COPY --from=build --chmod=0644 /out/plugins/ /

FROM debian:bookworm-slim AS server
# The helm plugin verifies https:// repositories against the system's CA store, which the slim image
# does not have.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# Plugin folders must be owned by root or the server's user and not writable by others: the files are
# copied as root with mode 0755/0644 and the server runs as an unprivileged user that cannot change them.
COPY --from=build --chmod=0755 /out/tributary /usr/local/bin/tributary
COPY --from=build --chmod=0644 /out/plugins/ /opt/tributary/plugins/
COPY --chmod=0644 examples/catalog.json /opt/tributary/examples/catalog.json
COPY --chmod=0644 examples/charts/ /opt/tributary/examples/charts/
COPY --chmod=0644 deploy/tributary.toml /etc/tributary/tributary.toml
RUN chmod 0755 /opt/tributary /opt/tributary/plugins /opt/tributary/examples /opt/tributary/examples/charts /etc/tributary
USER 65532:65532
EXPOSE 50051
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/tributary"]
CMD ["serve", "--config", "/etc/tributary/tributary.toml"]
