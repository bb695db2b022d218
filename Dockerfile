# syntax=docker/dockerfile:1
#
# Chronicle's image: a static binary on a minimal, non-root base.
#
#   docker build -t chronicle:dev .
#   docker run --rm chronicle:dev run --help
#
# The image runs `chronicle run`; configure it through the CHRONICLE_*
# environment variables (`chronicle run --help` lists them all), e.g.
# CHRONICLE_BROKERS, CHRONICLE_REDIS, CHRONICLE_TRANSACTIONAL_ID,
# CHRONICLE_ADMIN_ADDR. Other subcommands run with arguments in place of
# CMD: `docker run --rm chronicle:dev topics orders --create --brokers …`.
#
# go test ./deploy/ checks this file: the Go version against go.mod,
# the build flags, the entrypoint, and it builds the binary the same way
# from the files this build context would hold after .dockerignore.

# GO_VERSION must be at least the go line of go.mod.
ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src
# Modules first, so that a change to the code alone reuses this layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# CGO_ENABLED=0: a static binary, no libc needed at run time.
# -trimpath: no build-machine paths in the binary (reproducible builds).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w" -o /out/chronicle ./cmd/chronicle

# distroless/static: CA certificates (Kafka TLS, rediss://), tzdata,
# /etc/passwd with the nonroot user (65532); no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/chronicle /chronicle
USER 65532:65532
# The admin HTTP server (--admin-addr, default :9400): /metrics, /livez, /readyz.
EXPOSE 9400
ENTRYPOINT ["/chronicle"]
CMD ["run"]
