# Multi-stage build of agent-server.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY static static
COPY infra/mock-llm infra/mock-llm
RUN cargo build --release --locked --bins && strip target/release/agent-server target/release/mock-llm

FROM debian:bookworm-slim
# postgresql gives the embedded mode its binaries when no DATABASE_URL is set;
# ca-certificates lets the model providers' TLS verify; bubblewrap is the shell
# tool's sandbox (README: "The shell sandbox").
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates postgresql curl bubblewrap \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/agent-server /usr/local/bin/agent-server
COPY --from=build /src/target/release/mock-llm /usr/local/bin/mock-llm
# The server runs as a user of its own, never as root; its shell commands then
# run as that user too, inside bubblewrap's user namespace. It owns the data
# dir and the workspace, which a new volume mounted there inherits.
RUN groupadd --system --gid 10001 agent-server \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/agent-server \
       --no-create-home --shell /usr/sbin/nologin agent-server \
    && mkdir -p /var/lib/agent-server/workspace \
    && chown -R 10001:10001 /var/lib/agent-server \
    && chmod 755 /var/lib/agent-server
# Every interface, only because a container's published port arrives on its
# own network interface and not on loopback; outside a container keep the
# default, 127.0.0.1.
ENV AGENT_SERVER_ADDR=0.0.0.0:3200 \
    AGENT_SERVER_DATA_DIR=/var/lib/agent-server
USER 10001:10001
EXPOSE 3200
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:3200/healthz || exit 1
ENTRYPOINT ["agent-server"]
CMD ["serve"]
