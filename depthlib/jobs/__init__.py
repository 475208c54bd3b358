"""The course's jobs, each one call and one CLI command: SparK pretraining (``pretrain``), UNet++
fine-tuning (``finetune``), evaluation by the NYU protocol beside baselines (``evaluate``), and
depth maps for image files (``predict``)."""
