"""What several notebooks, ``depthlib reproduce`` or the tests share: the scratch-vs-pretrained
experiment, the failure-mode sweeps, the lesson helpers, and the runner that executes the
notebooks."""
