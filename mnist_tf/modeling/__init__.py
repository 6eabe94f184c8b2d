"""The network (`network`: Conv-BN-ReLU blocks, pools, a dense head), its loss (`losses`) and optimizer
(`optimizer`)."""
