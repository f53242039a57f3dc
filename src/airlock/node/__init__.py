"""The offline node: host changes (containerd mirrors and config, kubelet, sysctls, modules)."""
