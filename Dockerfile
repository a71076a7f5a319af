# The proxy and its bundled plugins in a small image that runs as a non-root user, for
# examples/kubernetes (docs/operations.md, "Deploying on Kubernetes"). CI does not build it
# (no container runtime there); build it with
#
#   docker build -t switchyard:0.1.0 .
#
# Build stage: the proxy (release) and the bundled plugins (wasm32-wasip2 components).
FROM rust:1-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p switchyard && scripts/build-plugins

# Run stage: glibc and libgcc only; no shell. User 65532 ("nonroot") owns nothing in the
# image: the configuration and plugins come from ConfigMaps, the plugin cache from a
# writable volume (`[proxy] plugin_cache_dir`), so the root filesystem can be read-only.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/switchyard /usr/local/bin/switchyard
COPY --from=build /src/plugins/dist/ /usr/lib/switchyard/plugins/
USER 65532:65532
EXPOSE 6432 9127
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["--config", "/etc/switchyard/switchyard.toml", "--log-format", "json"]
