"""The exercises' answers, as code to paste into the exercise cells (``chN.solution(n)`` shows one).

Each chapter module re-exports its table as ``SOLUTIONS``. The answers use the notebook's names
(``settings``, ``old_model``, ``resnet18_path``, ...) and the imports of its Setup cell.

>>> sorted(CH4)
[1, 2, 3, 4, 5]
"""

from __future__ import annotations

#: Chapter 1.
CH1: dict[int, str] = {
    1: """
        from collections import OrderedDict

        from torch import nn

        named_net = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(3, 16, 3)),
            ("relu", nn.ReLU()),
            ("pool", nn.AdaptiveAvgPool2d(1)),
            ("flatten", nn.Flatten()),
            ("fc", nn.Linear(16, settings.num_classes)),
        ])).to(settings.device)
        """,
    2: """
        from torch import nn

        from helpers.models import Bottleneck


        class FixedNet(nn.Module):
            def __init__(self, num_classes, *, width=16, depth=3):
                super().__init__()
                self.stem = nn.Conv2d(1, width, 3, padding=1)
                self.blocks = nn.ModuleList(
                    [Bottleneck(width, width) for _ in range(depth)])
                self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                          nn.Linear(width, num_classes))

            def forward(self, x):
                x = self.stem(x)
                for block in self.blocks:
                    x = block(x)
                return self.head(x)
        """,
    3: """
        from torch import nn


        class ActivationNet(nn.Module):
            def __init__(self, num_classes):
                super().__init__()
                self.hidden = nn.Linear(64, 32)
                self.activations = nn.ModuleDict(
                    {"relu": nn.ReLU(), "gelu": nn.GELU(), "tanh": nn.Tanh()})
                self.fc = nn.Linear(32, num_classes)

            def forward(self, x, activation="relu"):
                if activation not in self.activations:
                    raise ValueError(f"unknown activation {activation!r}; "
                                     f"choose one of {list(self.activations)}")
                act = self.activations[activation]
                return self.fc(act(self.hidden(x.flatten(1))))


        act_net = ActivationNet(settings.num_classes).to(settings.device)
        """,
    4: """
        from helpers.models import TinyResNet

        budget_net = TinyResNet(settings.num_classes, width=48, depth=4).to(settings.device)
        """,
}


#: Chapter 2.
CH2: dict[int, str] = {
    1: """
        exercise_net = resnet18(weights=None).to(settings.device)
        # A new head: the old head's in_features, settings.num_classes outputs, on the device.
        exercise_net.fc = nn.Linear(exercise_net.fc.in_features, settings.num_classes).to(
            settings.device)
        """,
    2: """
        from helpers.modify import freeze, unfreeze

        finetune_net = resnet18(weights=None, num_classes=settings.num_classes)
        finetune_net = finetune_net.to(settings.device)
        freeze(finetune_net)
        for part in (finetune_net.layer4, finetune_net.fc):
            unfreeze(part)
        """,
    3: """
        class LogitsFeaturesExtra(nn.Module):
            def __init__(self, num_classes, extra_dim):
                super().__init__()
                self.backbone = resnet18(weights=None)
                feature_dim = self.backbone.fc.in_features
                self.backbone.fc = nn.Identity()
                self.head = nn.Linear(feature_dim + extra_dim, num_classes)

            def forward(self, x, extra):
                features = self.backbone(x)
                logits = self.head(torch.cat([features, extra], dim=1))
                return logits, features


        extra_dim = 2
        exercise_model = LogitsFeaturesExtra(settings.num_classes, extra_dim).to(settings.device)
        """,
    4: """
        loaded = resnet18(weights=None, num_classes=settings.num_classes).to(settings.device)
        saved = torch.load(resnet18_path, map_location=settings.device, weights_only=True)
        report = loaded.load_state_dict(
            {k: v for k, v in saved.items() if not k.startswith("fc.")}, strict=False)
        assert report.missing_keys == ["fc.weight", "fc.bias"] and not report.unexpected_keys
        """,
}


#: Chapter 3.
CH3: dict[int, str] = {
    1: """
        from helpers.checkpoint import unwrap_model


        def save_for_inference(model, path):
            # unwrap_model finds the model inside DataParallel, DDP or torch.compile
            torch.save(unwrap_model(model).state_dict(), path)
        """,
    2: """
        def strip_module_prefix(state_dict):
            return {key.removeprefix("module."): value for key, value in state_dict.items()}
        """,
    3: """
        def resume(path, model, optimizer, scheduler):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            return checkpoint["epoch"] + 1
        """,
    4: """
        from helpers.models import TinyResNet

        best_net = TinyResNet(settings.num_classes, width=32, depth=1, dropout=0.1)
        best = torch.load(folder / "best.pt", map_location=settings.device, weights_only=True)
        best_net.load_state_dict(best["model"])
        best_net = best_net.to(settings.device).eval()
        """,
}


#: Chapter 4.
CH4: dict[int, str] = {
    1: """
        import torch

        from helpers.models import TinyResNet

        extended = TinyResNet(settings.num_classes, **arch).to(settings.device)
        backbone = {k: v for k, v in old_model.state_dict().items() if not k.startswith("fc.")}
        extended.load_state_dict(backbone, strict=False)
        with torch.no_grad():
            extended.fc.weight[:old_classes] = old_model.fc.weight
            extended.fc.bias[:old_classes] = old_model.fc.bias
        """,
    2: """
        import torch


        def predict_digits(model, X, class_names):
            model.eval()
            with torch.inference_mode():
                indices = model(X).argmax(dim=1)
            return [class_names[i] for i in indices.tolist()]
        """,
    3: """
        from helpers.checkpoint import load_checkpoint
        from helpers.training import History, fit


        def resume_training(path, model, optimizer, scheduler, data, epochs):
            state = load_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler)
            history = History.from_dict(state["history"])
            return fit(model, data, optimizer, epochs=epochs, scheduler=scheduler,
                       start_epoch=state["start_epoch"], history=history, progress=False)
        """,
    4: """
        command = ("torchrun --standalone --nproc-per-node=4 -m helpers.pipeline --device cpu "
                   f"--num-classes {settings.num_classes} --epochs 5 --checkpoint-dir runs/ch4/ex4")
        """,
    5: """
        import torch


        def cautious_predict(logits, threshold=0.9):
            confidence, predicted = logits.softmax(dim=1).max(dim=1)
            return torch.where(confidence >= threshold, predicted, -1)
        """,
}
