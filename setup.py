"""nodeport-lab: the hidden cost of Kubernetes NodePort, shown with real packets."""

from setuptools import find_packages, setup

NOTEBOOK = ["jupyterlab>=4", "ipykernel>=6", "nbclient>=0.7", "nbformat>=5"]

setup(
    name="nodeport-lab",
    version="0.1.0",
    description="Mininet + Open vSwitch + os-ken emulation of kube-proxy NodePort semantics",
    python_requires=">=3.10",
    packages=find_packages(include=["lab", "lab.*", "topologies", "controllers"]),
    install_requires=[
        "os-ken>=4.0",
        "networkx>=2.8",
        "PyYAML>=6.0",
        "matplotlib>=3.6",
        "cryptography>=38",  # certificates for TLS hosts without a Secret (lab.ingress.certificates)
    ],
    extras_require={
        # Jupyter walkthroughs (notebooks/): a Jupyter server, the kernel, and headless execution for CI.
        "notebook": NOTEBOOK,
        "test": ["pytest>=7", "hypothesis>=6", *NOTEBOOK],
    },
    entry_points={"console_scripts": ["nodeport-lab=lab.cli:main"]},
)
