#!/bin/sh
# Builds OBDB_OPTUNA_STORAGE from the PostgreSQL service and its password file (a Docker secret)
# when it is not set, so the password never appears in compose files, settings or `docker inspect`.
# Then runs the command.
set -eu
if [ -z "${OBDB_OPTUNA_STORAGE:-}" ] && [ -n "${POSTGRES_HOST:-}" ]; then
  password_file="${POSTGRES_PASSWORD_FILE:-/run/secrets/postgres_password}"
  if [ ! -r "$password_file" ]; then
    echo "obdb-entrypoint: POSTGRES_HOST is set but the password file $password_file is missing" >&2
    exit 2
  fi
  OBDB_OPTUNA_STORAGE="$(python - "$password_file" <<'PY'
import os, sys
from urllib.parse import quote
password = open(sys.argv[1], encoding="utf-8").read().strip()
print("postgresql+psycopg://{}:{}@{}:{}/{}".format(
    quote(os.environ.get("POSTGRES_USER", "optuna"), safe=""), quote(password, safe=""),
    os.environ["POSTGRES_HOST"], os.environ.get("POSTGRES_PORT", "5432"), os.environ.get("POSTGRES_DB", "optuna")))
PY
)"
  export OBDB_OPTUNA_STORAGE
fi
exec "$@"
