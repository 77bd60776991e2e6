"""Chapter 2 runs ``ResNet50_Weights.DEFAULT.transforms()`` offline: torchvision builds the
preprocessing from metadata that ships with it, and never opens a connection."""

import socket

import pytest
import torch
import torchvision


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_pretrained_preprocessing_needs_no_download(no_network):
    preprocess = torchvision.models.ResNet50_Weights.DEFAULT.transforms()
    assert (preprocess.resize_size, preprocess.crop_size) == ([232], [224])
    image = torch.zeros(3, 8, 8)  # a black 8x8 image, as chapter 2's digit corner
    batch = preprocess(image).unsqueeze(0)
    assert batch.shape == (1, 3, 224, 224)
    black = -torch.tensor(preprocess.mean) / torch.tensor(preprocess.std)
    assert torch.allclose(batch[0, :, 0, 0], black)
