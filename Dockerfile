# syntax=docker/dockerfile:1
# The eventagg reference server: a static binary on distroless, as non-root,
# with its SQLite database on a volume at /data.
#
#   docker build -t event-aggregator .
#   docker run -d -p 8080:8080 -v eventagg-data:/data event-aggregator

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/eventagg ./cmd/eventagg \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/eventagg /usr/local/bin/eventagg
# An empty /data owned by the nonroot user (65532): a new named volume takes
# its ownership, so the server can create its database there.
COPY --from=build --chown=65532:65532 /out/data /data
ENV EVENTAGG_ADDR=:8080 \
    EVENTAGG_DB=/data/events.db \
    EVENTAGG_LOG_FORMAT=json
VOLUME /data
EXPOSE 8080
USER nonroot:nonroot
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/eventagg", "-healthcheck"]
# SIGTERM (docker stop) drains the queue and closes the database; allow it
# the shutdown timeout with `docker stop -t 35`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/eventagg"]
