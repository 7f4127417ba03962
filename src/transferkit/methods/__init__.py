"""Transfer methods beyond freeze and fine-tune: adapters, regularised and mixed losses, distillation, domain
adaptation. Each is one module registered in plugins.py."""
