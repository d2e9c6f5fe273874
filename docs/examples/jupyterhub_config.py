"""A jupyterhub_config.py for a hub whose users run long notebooks.

jupyter-persist needs no line here: installed into the single-user environment
(`pip install jupyter-persist`), it is on in every user's server. What this file sets
is what an admin decides around it: which kernels the single-user servers may cull.
The test suite runs this file (tests/test_hub.py), adding only what a test needs
(addresses, a dummy authenticator and a local spawner).
"""

c = get_config()  # noqa: F821 (defined by JupyterHub when it loads this file)

# The single-user servers' own kernel culler (jupyter_server's MappingKernelManager):
# kernels idle for an hour go, whether or not a browser is connected
# (cull_connected). A kernel running a cell is busy and is never culled
# (cull_busy=False, the default): a ten-hour training run with its laptop closed keeps
# running, and its outputs reach the notebook. Set cull_busy=True only if runaway
# kernels must be stopped even while they work; the extension then writes what they
# printed before they were culled.
c.Spawner.args = [
    "--MappingKernelManager.cull_idle_timeout=3600",
    "--MappingKernelManager.cull_interval=300",
    "--MappingKernelManager.cull_connected=True",
    "--MappingKernelManager.cull_busy=False",
]
c.Spawner.default_url = "/lab"
