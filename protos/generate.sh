#!/bin/sh
# Regenerate the Python code for protos/email.proto. Run from anywhere:
#
#     protos/generate.sh [OUTPUT_DIR]        (default OUTPUT_DIR: protos/)
#
# Writes email_pb2.py, email_pb2.pyi (messages) and email_grpc.py (grpclib
# stubs). Uses $PYTHON if set, else the repo's .venv/bin/python, else python3;
# that interpreter needs grpcio-tools and grpclib. Never edit the generated
# files by hand: tests/grpc/test_protos.py checks they match this script's output.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
out=${1:-$here}
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then
        PYTHON=$root/.venv/bin/python
    else
        PYTHON=python3
    fi
fi
export PYTHON

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM

# protoc finds plugins on PATH by name; point it at grpclib's plugin run by
# the chosen interpreter, so an activated venv is not needed.
plugin=$tmp/protoc-gen-grpclib_python
cat >"$plugin" <<'PLUGIN'
#!/bin/sh
exec "$PYTHON" -c 'import sys; from grpclib.plugin.main import main; sys.exit(main())'
PLUGIN
chmod +x "$plugin"

mkdir "$tmp/gen"
"$PYTHON" -m grpc_tools.protoc \
    -I "$here" \
    --plugin=protoc-gen-grpclib_python="$plugin" \
    --python_out="$tmp/gen" \
    --pyi_out="$tmp/gen" \
    --grpclib_python_out="$tmp/gen" \
    "$here/email.proto"

# grpclib imports the messages module as a top-level `email_pb2`; it lives in
# the `protos` package.
if ! grep -q '^import email_pb2$' "$tmp/gen/email_grpc.py"; then
    echo "generate.sh: expected 'import email_pb2' in email_grpc.py; grpclib's output changed" >&2
    exit 1
fi
sed 's/^import email_pb2$/from protos import email_pb2/' "$tmp/gen/email_grpc.py" >"$tmp/email_grpc.py"
mv "$tmp/email_grpc.py" "$tmp/gen/email_grpc.py"

mkdir -p "$out"
cp "$tmp/gen/email_pb2.py" "$tmp/gen/email_pb2.pyi" "$tmp/gen/email_grpc.py" "$out/"
