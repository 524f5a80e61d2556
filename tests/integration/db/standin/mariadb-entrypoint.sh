#!/bin/sh
# Stand-in for the official mariadb (and mysql) image's entrypoint: MARIADB_* or MYSQL_*
# variables, data in /var/lib/mysql; first start initialises with networking off, sets the
# root password (root@localhost and root@%), creates the database and the user.
set -eu
if [ "$1" != mariadbd ] && [ "$1" != mysqld ]; then exec "$@"; fi
ROOT_PW=${MARIADB_ROOT_PASSWORD:-${MYSQL_ROOT_PASSWORD:?MARIADB_ROOT_PASSWORD is required}}
DB=${MARIADB_DATABASE:-${MYSQL_DATABASE:-}}
DB_USER=${MARIADB_USER:-${MYSQL_USER:-}}
DB_PW=${MARIADB_PASSWORD:-${MYSQL_PASSWORD:-}}
SOCK=/run/mysqld/mysqld.sock
sql_quote() { printf '%s' "$1" | sed "s/\\\\/\\\\\\\\/g; s/'/''/g"; }
mkdir -p /var/lib/mysql /run/mysqld
chown mysql:mysql /var/lib/mysql /run/mysqld
if [ ! -d /var/lib/mysql/mysql ]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db \
        --auth-root-authentication-method=normal >/dev/null
    mariadbd --user=mysql --datadir=/var/lib/mysql --skip-networking --socket=$SOCK &
    pid=$!
    i=0
    until mariadb --protocol=socket -S $SOCK -u root -e "SELECT 1" >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -lt 300 ] || { echo "init server did not start" >&2; exit 1; }
        sleep 0.1
    done
    pw=$(sql_quote "$ROOT_PW")
    {
        echo "ALTER USER 'root'@'localhost' IDENTIFIED BY '$pw';"
        echo "CREATE USER 'root'@'%' IDENTIFIED BY '$pw';"
        echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
        if [ -n "$DB" ]; then echo "CREATE DATABASE IF NOT EXISTS \`$DB\`;"; fi
        if [ -n "$DB_USER" ]; then
            echo "CREATE USER '$DB_USER'@'%' IDENTIFIED BY '$(sql_quote "$DB_PW")';"
            [ -z "$DB" ] || echo "GRANT ALL ON \`$DB\`.* TO '$DB_USER'@'%';"
        fi
    } | mariadb --protocol=socket -S $SOCK -u root
    kill "$pid"
    wait "$pid" || true
    echo "MariaDB init process done. Ready for start up."
fi
exec mariadbd --user=mysql --datadir=/var/lib/mysql --socket=$SOCK --bind-address=0.0.0.0 --port=3306
