#!/bin/sh
# Stand-in for the official redis image's entrypoint: runs in /data (WORKDIR), where
# redis-server keeps dump.rdb.
set -eu
mkdir -p /data
cd /data
exec "$@"
