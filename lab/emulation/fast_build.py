"""Build a Mininet network with every shell started at once and every veth pair made by one ``ip -batch``.

Mininet starts one shell per host and switch and waits for its prompt before starting the next, then
makes each link with a round trip through a shell (``ip link add ... netns PID``): at 100 nodes x 10
pods, 1,203 shells and 1,202 links one after another (about 30 s of a 100-node start-up). Here every
host's shell is spawned first and their prompts are awaited together (switches start theirs as Mininet
does meanwhile: a switch's shell runs a command as it is made), then every veth pair is created from
the root namespace by one ``ip -batch``, each end placed in its namespace by ``netns PID`` in the same
command. Names, MACs and ports are exactly what Mininet would have used (``Link`` still records the
interfaces); links with traffic control (``TCLink``) are made Mininet's way, their ``tc`` commands
needing the interface at once. Only the build is batched: hosts and links added to a running network
(``ClusterNetwork.add_pod``) go the ordinary way.

Imported only when a network is built (Mininet is not needed to read manifests).
"""

from __future__ import annotations

import os
import pty
import select
import subprocess

from mininet.link import Link
from mininet.net import Mininet

from lab.errors import LabError

PROMPT = chr(127)  # Mininet's shell prompt (``Node.startShell``)


class DeferredShell:
    """A node whose shell is spawned by ``startShell`` but awaited later (``await_shells``), so that many
    shells start in parallel. Without ``defer_shell`` it is Mininet's own ``startShell``."""

    def __init__(self, name, defer_shell: bool = False, **params):
        self._defer_shell = defer_shell
        super().__init__(name, **params)

    def startShell(self, mnopts=None):  # noqa: N802 (Mininet's name)
        if not self._defer_shell:
            return super().startShell(mnopts)
        # Mininet's Node.startShell up to its wait for the prompt (mininet 2.3.0)
        opts = ("-cd" if mnopts is None else mnopts) + ("n" if self.inNamespace else "")
        cmd = ["mnexec", opts, "env", "PS1=" + PROMPT, "bash", "--norc", "--noediting", "-is", "mininet:" + self.name]
        self.master, self.slave = pty.openpty()
        self.shell = self._popen(cmd, stdin=self.slave, stdout=self.slave, stderr=self.slave, close_fds=False)
        self.stdin = os.fdopen(self.master, "r")
        self.stdout = self.stdin
        self.pid = self.shell.pid
        self.pollOut = select.poll()
        self.pollOut.register(self.stdout)
        self.outToNode[self.stdout.fileno()] = self
        self.inToNode[self.stdin.fileno()] = self
        self.execed, self.lastCmd, self.lastPid, self.readbuf = False, None, None, ""
        self.waiting = True  # until its prompt is read (await_shells)
        return None

    def _await_prompt(self) -> None:
        while True:
            data = self.read(1024)
            if data and data[-1] == PROMPT:
                break
            self.pollOut.poll()
        self.waiting = False
        self.sendCmd("unset HISTFILE; stty -echo; set +m")  # what Mininet runs next, awaited in await_shells


def await_shells(nodes) -> None:
    """Wait for the prompt of every deferred shell, then for each one's first command: from then on its
    namespace exists (mnexec has unshared it), so interfaces can be moved into it."""
    deferred = [n for n in nodes if getattr(n, "_defer_shell", False)]
    for node in deferred:
        node._await_prompt()
    for node in deferred:
        node.waitOutput()
        node._defer_shell = False  # an ordinary Mininet node from now on


class BatchMininet(Mininet):
    """Mininet whose ``buildFromTopo`` starts shells in parallel and makes plain veth links in one batch."""

    def __init__(self, *args, batch_path: str, **kwargs):
        self.batch_path = batch_path
        self._pending: list[str] | None = None
        super().__init__(*args, **kwargs)

    def addHost(self, name, cls=None, **params):  # noqa: N802 (Mininet's name)
        if self._pending is not None:
            params.setdefault("defer_shell", True)
        return super().addHost(name, cls=cls, **params)

    def addLink(self, node1, node2, port1=None, port2=None, cls=None, **params):  # noqa: N802
        plain = (cls or self.link) is Link
        if self._pending is not None and plain:
            cls = _batched_link(self._pending)
        return super().addLink(node1, node2, port1=port1, port2=port2, cls=cls, **params)

    def buildFromTopo(self, topo=None):  # noqa: N802
        topo = topo or self.topo
        self._pending = []
        try:
            for name in topo.hosts():
                self.addHost(name, **topo.nodeInfo(name))
            for name in topo.switches():
                params = topo.nodeInfo(name)
                params.setdefault("batch", True)
                self.addSwitch(name, **params)
            await_shells(self.hosts)  # booting while the switches' shells started, one by one as Mininet does
            for _src, _dst, params in topo.links(sort=True, withInfo=True):
                self.addLink(**params)
            create_pairs(self._pending, self.batch_path)
        finally:
            self._pending = None


def _batched_link(pending: list[str]):
    class BatchedLink(Link):
        """A veth pair recorded for ``create_pairs`` instead of made through a shell."""

        @classmethod
        def makeIntfPair(cls, intfname1, intfname2, addr1=None, addr2=None, node1=None, node2=None,  # noqa: N802
                         deleteIntfs=True):  # noqa: N803
            pending.append(veth_command(intfname1, addr1, _netns(node1), intfname2, addr2, _netns(node2)))
    return BatchedLink


def _netns(node) -> int | None:
    return node.pid if node is not None and node.inNamespace else None


def veth_command(name1: str, mac1: str | None, netns1: int | None, name2: str, mac2: str | None,
                 netns2: int | None) -> str:
    """One ``ip -batch`` line making a veth pair, each end with its MAC in its namespace (None: root)."""
    def end(name, mac, netns):
        return " ".join([f"name {name}"] + ([f"address {mac}"] if mac else []) + ([f"netns {netns}"] if netns else []))
    return f"link add {end(name1, mac1, netns1)} type veth peer {end(name2, mac2, netns2)}"


def create_pairs(commands: list[str], batch_path: str) -> None:
    if not commands:
        return
    with open(batch_path, "w") as f:
        f.writelines(line + "\n" for line in commands)
    done = subprocess.run(["ip", "-batch", batch_path], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise LabError(f"could not create the network's veth pairs: {done.stderr.strip()[-300:]}")


def batch_host(host_cls):
    """``host_cls`` (a Mininet Host class) whose shell can be deferred (``DeferredShell``)."""
    return type(f"Batch{host_cls.__name__}", (DeferredShell, host_cls), {})
