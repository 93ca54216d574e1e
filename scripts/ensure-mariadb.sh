#!/usr/bin/env bash
# Make sure a MariaDB (or MySQL) server answers on 127.0.0.1:3306 with a user the Slurm
# accounting tests' slurmdbd can use: 'pairio_slurm' without a password, allowed to create
# databases named slurm_acct_*. Starts an installed server that is down; installs one from
# the distribution's packages if none.
set -euo pipefail

ready() { mysqladmin ping -h 127.0.0.1 -P 3306 --silent >/dev/null 2>&1; }

if ! command -v mysqladmin >/dev/null 2>&1 || ! { ready || [ -x /usr/sbin/mariadbd ] || [ -x /usr/sbin/mysqld ]; }; then
  echo "ensure-mariadb: installing MariaDB from the distribution's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends mariadb-server mariadb-client >/dev/null
fi

if ! ready; then
  echo "ensure-mariadb: starting MariaDB"
  install -d -o mysql -g mysql -m 0755 /run/mysqld 2>/dev/null || true
  server=/usr/sbin/mariadbd; [ -x "$server" ] || server=/usr/sbin/mysqld
  start-stop-daemon --start --oknodo --background --exec "$server" -- --user=mysql --bind-address=127.0.0.1 --port=3306
  for _ in $(seq 1 60); do ready && break; sleep 0.5; done
fi
ready || { echo "ensure-mariadb: no MariaDB server answers on 127.0.0.1:3306" >&2; exit 1; }

# As the operating system's root over the local socket (Debian's root@localhost uses unix_socket auth),
# else over TCP as root without a password (how some machines are set up).
sql="CREATE USER IF NOT EXISTS 'pairio_slurm'@'127.0.0.1';
CREATE USER IF NOT EXISTS 'pairio_slurm'@'localhost';
GRANT ALL PRIVILEGES ON \`slurm\\_acct\\_%\`.* TO 'pairio_slurm'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`slurm\\_acct\\_%\`.* TO 'pairio_slurm'@'localhost';"
mysql -u root -e "$sql" 2>/dev/null || mysql -h 127.0.0.1 -P 3306 -u root -e "$sql"
