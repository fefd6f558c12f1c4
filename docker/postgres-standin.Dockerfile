# A PostgreSQL stand-in for hosts that cannot pull postgres:17.2-bookworm (no Docker Hub): Debian's
# postgresql-15 on any Debian base (e.g. the debootstrap base of scripts/check_image.sh), with the
# part of the official image's interface that docker/compose.yaml uses: POSTGRES_USER, POSTGRES_DB,
# POSTGRES_PASSWORD_FILE, data in /var/lib/postgresql/data, pg_isready for the health check.
# Build context: docker/. Use with POSTGRES_IMAGE=<tag> in the compose env file.
ARG BASE_IMAGE=debian:bookworm
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive \
    PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
 && chmod 0700 /var/lib/postgresql/data
COPY postgres-standin.sh /usr/local/bin/postgres-standin
# hadolint ignore=DL3066
USER postgres
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/postgres-standin"]
