"""Benchmarks of the lab itself: ``python -m bench`` (see ``bench.__main__``).

What they answer, each with the issue's goal:

1. ``time-to-result``: ``python -m lab`` end to end, split into phases (<= 15 s on 2 cores).
2. ``datapath``: iperf3 throughput and short TCP connections per second through a nodePort (DNAT;
   DNAT+SNAT on the entry node; DNAT+SNAT to another node) against plain routed forwarding to the same
   pod over the same switches, as ratios measured side by side in each run (>= 0.9).
3. ``control-plane``: from a published cluster state to every switch's barrier acknowledgement for
   1, 100 and 1,000 Services of 10 endpoints on 10 nodes (1,000 in <= 2 s), with the controller's
   compile time apart; and from a pod change to a probe seeing it, p50/p99 (<= 100 ms at p99).
4. ``scale``: 5, 10, 20, 50 nodes x 10 pods, from nothing to every pod answering through its NodePort
   (50 x 10 in <= 60 s), with Open vSwitch's and the lab's memory, and the teardown.
5. ``probe-rate``: the requests per second the lab's probe reaches and the CPU it costs, beside what
   the pod servers and Open vSwitch cost for the same requests.

Results are data first (``bench.report``: JSON in ``bench/results/``), then a table; every figure is
the median of its runs and names the machine and commit (``bench.machine``).
"""
