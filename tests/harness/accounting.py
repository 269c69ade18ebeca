"""Slurm accounting for a dev cluster that asks for it (DevCluster(accounting=True)):
the host's MariaDB and the cluster's own slurmdbd (inside a chroot Slurm's
root, reaching MariaDB over TCP), each on a free port, with data, sockets,
logs and a password of this cluster only, under its directory. Started
before slurmctld, stopped after it. Opt-in: a fresh MariaDB costs seconds,
so only the accounting tests pay for it."""
from __future__ import annotations

import os
import secrets
import subprocess
from typing import Callable

from . import slurms

DATABASE = "slurm_acct_db"


class Accounting:
    def __init__(self, directory: str, slurm: slurms.Slurm, hostname: str, munge_socket: str,
                 free_port: Callable[[str], int]):
        self.slurm = slurms.with_slurmdbd(slurm)
        if not os.path.exists("/usr/sbin/mariadbd"):
            raise slurms.Unavailable("needs Debian's mariadb-server (bash run.sh test installs it)")
        self.dir, self.hostname, self.munge_socket = os.path.join(directory, "accounting"), hostname, munge_socket
        self.db_port, self.dbd_port = free_port("127.0.0.1"), free_port("127.0.0.1")
        self.password = secrets.token_hex(16)
        self.socket = os.path.join(self.dir, "mysqld.sock")

    def slurm_conf(self) -> str:
        """slurm.conf's lines that make slurmctld report to this slurmdbd
        (AccountingStoragePass: the munge socket for slurmdbd connections,
        which do not read AuthInfo)."""
        return ("AccountingStorageType=accounting_storage/slurmdbd\n"
                f"AccountingStorageHost=127.0.0.1\nAccountingStoragePort={self.dbd_port}\n"
                f"AccountingStoragePass={self.munge_socket}\n")

    def start_database(self, spawn: Callable, wait: Callable) -> None:
        data = os.path.join(self.dir, "mysql")
        os.makedirs(data)
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={data}", "--user=root",
                        "--auth-root-authentication-method=socket", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)
        spawn("mariadbd", ["/usr/sbin/mariadbd", "--no-defaults", f"--datadir={data}", "--user=root",
                           f"--socket={self.socket}", f"--port={self.db_port}", "--bind-address=127.0.0.1",
                           f"--pid-file={self.dir}/mysqld.pid", "--skip-name-resolve",
                           "--innodb-buffer-pool-size=64M", f"--log-error={self.dir}/mysqld.log"])
        wait(lambda: self._sql("SELECT 1").returncode == 0, 60, "MariaDB")
        self._sql(f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{self.password}'; "
                  f"GRANT ALL ON {DATABASE}.* TO 'slurm'@'127.0.0.1';", check=True)

    def _sql(self, statements: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run(["mariadb", "--no-defaults", f"--socket={self.socket}", "-u", "root",
                               "-e", statements], capture_output=True, text=True, timeout=30, check=check)

    def start_slurmdbd(self, root: str, conf_dir: str, spawn: Callable, wait: Callable, run: Callable) -> None:
        """slurmdbd reads slurmdbd.conf beside slurm.conf (SLURM_CONF), which
        must be the SlurmUser's alone (it holds the password)."""
        path = os.path.join(conf_dir, "slurmdbd.conf")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as f:
            f.write(f"AuthType=auth/munge\nAuthInfo=socket={self.munge_socket}\n"
                    f"DbdHost={self.hostname}\nDbdAddr=127.0.0.1\nDbdPort={self.dbd_port}\n"
                    f"SlurmUser=root\nPidFile={self.dir}/slurmdbd.pid\nLogFile={self.dir}/slurmdbd.log\n"
                    "DebugLevel=info\nStorageType=accounting_storage/mysql\n"
                    f"StorageHost=127.0.0.1\nStoragePort={self.db_port}\nStorageUser=slurm\n"
                    f"StoragePass={self.password}\nStorageLoc={DATABASE}\n")
        spawn("slurmdbd", ["chroot", root, "/usr/sbin/slurmdbd", "-D"])
        wait(lambda: run("sacctmgr", "-n", "list", "cluster", check=False).returncode == 0, 90, "slurmdbd")
