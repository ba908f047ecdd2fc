"""Real NGINX in the L7 proxy pods (``lab.kube.l7_proxies``), owned by the run.

Each proxy pod gets a directory in the run (``nginx-<pod>/``: configuration, certificates, logs, pid and
temporary files) and a foreground NGINX master started in the pod's network namespace, as the lab's
iperf3 servers are (``lab.emulation.iperf3``): recorded in the run's resources, master and workers, once
NGINX has set its process title, so ``python -m lab clean`` can kill them by pid after a crash, and
stopped by pid at teardown. When the cluster changes (a pod added, deleted or moved), every proxy's
configuration is rendered again and a changed one is reloaded with SIGHUP, as the ingress controller
reloads NGINX; a proxy pod that is gone has its NGINX stopped.

Certificates: a TLS host's Secret from the manifests when it exists, otherwise one the run's CA issues
for the host (``lab.ingress.certificates``); the default certificate answers unknown SNI names.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field

from lab.emulation.iperf3 import listening
from lab.emulation.resources import RunDir, kill_owned, runs, stop_process
from lab.errors import LabError
from lab.ingress.certificates import FAKE_CERTIFICATE_CN, CertificateAuthority, Issued
from lab.ingress.nginx import render
from lab.ingress.site import ENDPOINTS, UPSTREAM_MODES, Table, gateway_table, ingress_table, site, tls_hosts
from lab.kube.l7_proxies import ProxyRole, proxy_pods
from lab.kube.model import Cluster, Pod
from lab.polling import wait_for

NGINX = "nginx"
MASTER_TITLE = b"nginx: master process"


@dataclass
class RunningProxy:
    pod: str
    role: ProxyRole
    prefix: str
    proc: subprocess.Popen
    config: str
    workers: set[int] = field(default_factory=set)

    @property
    def log_path(self) -> str:
        return os.path.join(self.prefix, "error.log")


def _children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(p) for p in f.read().split()}
    except OSError:
        return set()


def _write(path: str, text: str, mode: int = 0o644) -> str:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w") as f:
        f.write(text)
    return path


class Proxies:
    """The NGINX of every proxy pod of one network. ``net`` is a running ``ClusterNetwork``."""

    def __init__(self, net, upstream: str = ENDPOINTS, proxy_protocol: bool = False):
        if upstream not in UPSTREAM_MODES:
            raise LabError(f"unknown upstream mode {upstream!r}", f"use one of {', '.join(UPSTREAM_MODES)}")
        self.net = net
        self.upstream = upstream
        self.proxy_protocol = proxy_protocol
        self.running: dict[str, RunningProxy] = {}
        self._ca: CertificateAuthority | None = None
        self._issued: dict[str, Issued] = {}

    @property
    def run(self) -> RunDir:
        return self.net.run

    @property
    def cluster(self) -> Cluster:
        return self.net.cluster

    def table(self, role: ProxyRole) -> Table:
        if role.kind == "gateway":
            return gateway_table(self.cluster, role.gateway, self.upstream)
        return ingress_table(self.cluster, role, self.upstream)

    # --- files -------------------------------------------------------------------------------------------

    def ca(self) -> CertificateAuthority:
        if self._ca is None:
            self._ca = CertificateAuthority()
            _write(self.run.file("lab-ca.crt"), self._ca.cert_pem)
        return self._ca

    def ca_path(self) -> str:
        self.ca()
        return self.run.file("lab-ca.crt")

    def _pair(self, prefix: str, name: str, cert: str, key: str) -> tuple[str, str]:
        return (_write(os.path.join(prefix, f"{name}.crt"), cert),
                _write(os.path.join(prefix, f"{name}.key"), key, 0o600))

    def _certificates(self, prefix: str, table: Table) -> tuple[dict[str, tuple[str, str]], tuple[str, str]]:
        secrets = {s.key: s for s in self.cluster.tls_secrets}
        certs = {}
        for number, (host, secret_key) in enumerate(sorted(tls_hosts(table).items())):
            secret = secrets.get(secret_key) if secret_key else None
            if secret is not None:
                certs[host] = self._pair(prefix, f"tls-{number}", secret.cert_pem, secret.key_pem)
            else:
                if host not in self._issued:  # one certificate per host for the run's life
                    self._issued[host] = self.ca().issue(host, [host])
                issued = self._issued[host]
                certs[host] = self._pair(prefix, f"tls-{number}", issued.cert_pem, issued.key_pem)
        default_path = os.path.join(prefix, "default.crt")
        if os.path.exists(default_path):  # one default certificate per proxy for the run's life
            default = (default_path, os.path.join(prefix, "default.key"))
        else:
            fake = self.ca().issue(FAKE_CERTIFICATE_CN, [])
            default = self._pair(prefix, "default", fake.cert_pem, fake.key_pem)
        return certs, default

    def render(self, pod: Pod, role: ProxyRole, prefix: str) -> str:
        table = self.table(role)
        certs, default = self._certificates(prefix, table)
        what = f"{'ingress-nginx controller' if role.kind == 'ingress' else 'Gateway'} pod {pod.name}"
        # The PROXY-protocol load balancer fronts the ingress controller only (lab.cloud.haproxy).
        proxy_protocol = self.proxy_protocol and role.kind == "ingress"
        return render(site(self.cluster, table, what, prefix, certs, default, proxy_protocol))

    # --- processes ---------------------------------------------------------------------------------------

    def start(self) -> None:
        if shutil.which(NGINX) is None and proxy_pods(self.cluster):
            raise LabError("the manifests have ingress controller or Gateway pods but nginx is missing",
                           "run ./setup.sh as root")
        for name, role in proxy_pods(self.cluster).items():
            self._start(self.cluster.pod(name), role)

    def _start(self, pod: Pod, role: ProxyRole) -> None:
        # Named by the pod's serial, not its name: NGINX's unix sockets live here, and a socket path must
        # fit in 108 bytes (a Deployment pod's name alone can take 60).
        prefix = self.run.file(f"nginx-{pod.serial}")
        os.makedirs(prefix, exist_ok=True)
        config = self.render(pod, role, prefix)
        conf_path = _write(os.path.join(prefix, "nginx.conf"), config)
        argv = [NGINX, "-p", prefix, "-c", conf_path, "-e", os.path.join(prefix, "error.log")]
        with open(os.path.join(prefix, "stdout.log"), "ab") as log:
            proc = self.net.host(pod.name).popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        proxy = RunningProxy(pod.name, role, prefix, proc, config)
        self.running[pod.name] = proxy
        try:
            wait_for(lambda: proc.poll() is not None or runs(proc.pid, MASTER_TITLE), timeout=10,
                     what=f"NGINX in pod {pod.name} to start")
            self._check_alive(proxy)
            self.run.own_process(proc.pid, f"nginx in {pod.name}")
            for _, port in role.ports:
                wait_for(lambda port=port: self._check_alive(proxy) and listening(proc.pid, port), timeout=10,
                         what=f"NGINX in pod {pod.name} to listen on {port}")
            self._own_workers(proxy)
        except BaseException:
            self._stop(proxy)
            raise

    def _check_alive(self, proxy: RunningProxy) -> bool:
        if proxy.proc.poll() is not None:
            raise LabError(f"NGINX in pod {proxy.pod} exited (code {proxy.proc.returncode}): "
                           f"{_tail(proxy.log_path)}", f"see {proxy.prefix}")
        return True

    def _own_workers(self, proxy: RunningProxy) -> None:
        workers = wait_for(lambda: _children(proxy.proc.pid), timeout=10, what=f"NGINX workers in {proxy.pod}")
        for pid in workers - proxy.workers:
            self.run.own_process(pid, f"nginx worker in {proxy.pod}")
        proxy.workers |= workers

    def sync(self) -> None:
        """Follow the cluster: reload changed configurations, start new proxy pods, stop gone ones."""
        wanted = proxy_pods(self.cluster)
        for name in [n for n in self.running if n not in wanted]:
            self._stop(self.running.pop(name))
        for name, role in wanted.items():
            proxy = self.running.get(name)
            if proxy is None:
                self._start(self.cluster.pod(name), role)
                continue
            config = self.render(self.cluster.pod(name), role, proxy.prefix)
            if config != proxy.config:
                self._reload(proxy, config)

    def _reload(self, proxy: RunningProxy, config: str) -> None:
        old = _children(proxy.proc.pid)
        _write(os.path.join(proxy.prefix, "nginx.conf"), config)
        proxy.proc.send_signal(signal.SIGHUP)
        # NGINX starts new workers with the new configuration, then lets the old ones finish and exit.
        wait_for(lambda: self._check_alive(proxy) and (_children(proxy.proc.pid) - old), timeout=10,
                 what=f"NGINX in pod {proxy.pod} to reload")
        # Until the old workers have gone they may still accept new connections with the old configuration
        # (a switch to or from PROXY protocol would then answer wrongly); they leave once idle.
        try:
            wait_for(lambda: not (_children(proxy.proc.pid) & old), timeout=10,
                     what=f"NGINX in pod {proxy.pod}: the old workers to finish")
        except LabError as e:
            self.net.log(f"{e}; continuing")
        proxy.config = config
        self._own_workers(proxy)

    def _stop(self, proxy: RunningProxy) -> None:
        stop_process(self.run, proxy.proc)  # SIGTERM: NGINX's fast shutdown stops its workers too
        for pid in proxy.workers:
            record = self.run.resources.processes.get(str(pid))
            if record is not None:
                kill_owned(pid, record[1])
                self.run.disown_process(pid)

    def stop(self) -> list[Exception]:
        errors: list[Exception] = []
        for name in list(self.running):
            try:
                self._stop(self.running.pop(name))
            except Exception as e:  # keep tearing down
                errors.append(e)
        return errors


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"
