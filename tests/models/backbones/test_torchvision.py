"""torchvision ImageNet backbones under the YOLOv8-style detector: feature strides and channels, ImageNet
normalisation, the weights that `model.pretrained_backbone` selects and loads on the training side (the download is
mocked), a training step, freezing by part or stage count with frozen BatchNorm statistics, Unfreeze, Hydra configs
(and the deprecated `model.backbone.pretrained` / `.weights`), checkpoints and ONNX export."""

from contextlib import nullcontext
from urllib.error import URLError

import hydra
import pytest
import torch
import torchvision.models._api as torchvision_api
from hydra.core.hydra_config import HydraConfig
from torchvision.models import (
    MobileNet_V3_Large_Weights,
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    get_model,
)

from detector.assigners.tal import TaskAlignedAssigner
from detector.criteria.yolov8 import YOLOv8Criterion
from detector.losses.classification import BCEWithLogits
from detector.losses.dfl import DFLoss
from detector.losses.iou import CIoULoss
from detector.models import YOLODetector
from detector.models.backbones.torchvision import MobileNetV3, ResNet
from detector.postprocess.postprocessors import Postprocessor
from detector.training.callbacks import Unfreeze
from detector.training.finetune import load_torchvision_weights, prepare_model
from detector.training.module import LitDetector
from detector.training.runner import prepare_run_model

BACKBONES = {  # config name: (constructor, P3/P4/P5 channels, torchvision name, DEFAULT weights)
    "resnet18": (lambda **kw: ResNet(18, **kw), (128, 256, 512), "resnet18", ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (lambda **kw: ResNet(34, **kw), (128, 256, 512), "resnet34", ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (lambda **kw: ResNet(50, **kw), (512, 1024, 2048), "resnet50", ResNet50_Weights.IMAGENET1K_V2),
    "mobilenet_v3_large": (lambda **kw: MobileNetV3(**kw), (40, 112, 960), "mobilenet_v3_large",
                           MobileNet_V3_Large_Weights.IMAGENET1K_V2),
}
LIGHT = ["resnet18", "mobilenet_v3_large"]  # the cheaper ones for the heavier tests
STAGES = ["stem", "stage2", "stage3", "stage4", "stage5"]


@pytest.fixture
def fake_download(monkeypatch):
    """Replaces torchvision's weight download: returns the architecture's state dict with every float tensor
    filled with 0.5 and records the requested URLs; nothing is fetched."""
    urls = []

    def load_state_dict_from_url(url, *args, **kwargs):
        urls.append(url)
        name = next(name for _, _, name, weights in BACKBONES.values() if weights.url == url)
        state = get_model(name, weights=None).state_dict()
        return {k: v.fill_(0.5) if v.is_floating_point() else v for k, v in state.items()}

    monkeypatch.setattr(torchvision_api, "load_state_dict_from_url", load_state_dict_from_url)
    return urls


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_feature_maps_at_strides_8_16_32_with_the_stated_channels(name):
    make, channels, _, _ = BACKBONES[name]
    backbone = make().eval()
    assert [n for n, _ in backbone.named_children()] == STAGES and backbone.out_channels == channels
    with torch.no_grad():
        features = backbone(torch.rand(2, 3, 64, 96))
    assert [tuple(f.shape) for f in features] == [(2, c, 64 // s, 96 // s) for c, s in zip(channels, (8, 16, 32))]
    # under the detector the neck projects them to the scale's widths (n: 64, 128, 256)
    model = YOLODetector(3, "n", image_size=64, backbone=backbone)
    assert model.neck.out_channels == (64, 128, 256) and len(model.neck.project) == 3
    assert YOLODetector(3, "n").neck.project is None  # the CSP backbone already has them: no projection


def test_inputs_are_normalised_as_the_imagenet_weights_expect():
    backbone = ResNet(18).eval()
    transform = ResNet18_Weights.DEFAULT.transforms()
    images = torch.rand(1, 3, 64, 64)
    normalised = (images - torch.tensor(transform.mean).view(1, 3, 1, 1)) / torch.tensor(transform.std).view(1, 3, 1, 1)
    with torch.no_grad():
        x = backbone.stage3(backbone.stage2(backbone.stem(normalised)))
        expected = backbone.stage5(backbone.stage4(x))
        torch.testing.assert_close(backbone(images)[-1], expected)
    assert "mean" not in backbone.state_dict()  # constants, not weights


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_pretrained_loads_the_default_imagenet_weights_on_the_training_side(name, fake_download):
    make, _, torchvision_name, weights = BACKBONES[name]
    backbone = make()
    assert (backbone.torchvision_name, backbone.torchvision_weights) == (torchvision_name, weights)
    assert next(backbone.parameters()).ne(0.5).any() and fake_download == []  # built: no weights fetched
    model = YOLODetector(3, "n", image_size=64, backbone=backbone)
    prepare_model(model, pretrained_backbone=True)
    assert fake_download == [weights.url]
    assert all(p.eq(0.5).all() for p in model.backbone.parameters())  # the (fake) ImageNet weights were loaded
    assert not any(p.eq(0.5).all() for p in model.neck.parameters())  # and nothing else


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """An empty torch hub cache and a download that fails as it does without network access."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))

    def download_url_to_file(url, *args, **kwargs):
        raise URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", download_url_to_file)
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_without_network_the_error_says_where_to_put_the_weights_file(no_network):
    with pytest.raises(RuntimeError) as error:
        load_torchvision_weights(ResNet(18))
    message = str(error.value)
    assert "could not download torchvision's ResNet18_Weights.IMAGENET1K_V1 weights for resnet18 from " \
           "https://download.pytorch.org/models/resnet18-f37072fd.pth (<urlopen error" in message
    assert f"place it at {no_network / 'resnet18-f37072fd.pth'} (torch's hub cache" in message
    assert "model.backbone_weights=/path/to/resnet18-f37072fd.pth" in message
    # the file placed in the cache is used, no download
    assert not list(no_network.iterdir())  # nothing left behind by the failed download
    source = get_model("resnet18", weights=None)
    torch.save(source.state_dict(), no_network / "resnet18-f37072fd.pth")
    backbone = ResNet(18)
    assert len(load_torchvision_weights(backbone)) == len(source.state_dict()) - 2  # all but the classifier fc
    assert torch.equal(backbone.stem[0].weight, source.conv1.weight)


def test_a_local_weights_file_is_loaded_without_network(no_network, tmp_path):
    torch.manual_seed(0)
    source = get_model("mobilenet_v3_large", weights=None)
    torch.save(source.state_dict(), tmp_path / "mobilenet.pth")
    model = YOLODetector(3, "n", image_size=64, backbone=MobileNetV3())
    prepare_model(model, backbone_weights=str(tmp_path / "mobilenet.pth"))
    assert torch.equal(model.backbone.stem[0][0].weight, source.features[0][0].weight)
    assert torch.equal(model.backbone.stage5[-1][0].weight, source.features[16][0].weight)
    with pytest.raises(FileNotFoundError, match=r"model.backbone_weights=.*gone.pth: no such file"):
        load_torchvision_weights(ResNet(18), str(tmp_path / "gone.pth"))
    with pytest.raises(ValueError, match=r"model.backbone_weights=.*mobilenet.pth is not a state dict of torchvision's resnet18"):
        load_torchvision_weights(ResNet(18), str(tmp_path / "mobilenet.pth"))
    with pytest.raises(ValueError, match=r"YOLODetector has no part made of torchvision layers .*model/backbone=resnet18"):
        prepare_model(YOLODetector(3, "n", image_size=64), pretrained_backbone=True)


@pytest.mark.parametrize("option", ["model.backbone_weights", "model.backbone.weights"])
def test_hydra_backbone_weights_option_and_its_deprecated_name(compose_config, no_network, tmp_path, option):
    torch.manual_seed(0)
    source = get_model("resnet18", weights=None)
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    cfg = compose_config(["model/backbone=resnet18", f"{option}={tmp_path / 'r18.pth'}", f"paths.data_dir={tmp_path}"],
                         return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    module = hydra.utils.instantiate(cfg.module)
    assert isinstance(module.model.backbone, ResNet) and not torch.equal(module.model.backbone.stem[0].weight, source.conv1.weight)
    if option == "model.backbone_weights":
        prepare_run_model(module, cfg)
    else:
        with pytest.warns(FutureWarning, match="model.backbone.weights is deprecated .*: use model.backbone_weights") as caught:
            prepare_run_model(module, cfg)
        assert len(caught) == 1
    assert torch.equal(module.model.backbone.stem[0].weight, source.conv1.weight)


def test_resnet_depth_is_checked():
    with pytest.raises(ValueError, match=r"ResNet depth must be one of \(18, 34, 50\), got 101"):
        ResNet(101)


def criterion():
    return YOLOv8Criterion(TaskAlignedAssigner(3), BCEWithLogits(), CIoULoss(), DFLoss())


def targets():
    labels = torch.tensor([[0, 2], [1, 0]])
    boxes = torch.tensor([[[4.0, 6, 30, 40], [30, 20, 60, 58]], [[10, 10, 50, 30], [0, 0, 0, 0]]])
    return labels, boxes, torch.tensor([[True, True], [True, False]])


@pytest.mark.parametrize("name", LIGHT)
def test_a_training_step_reaches_the_backbone(name):
    torch.manual_seed(0)
    model = YOLODetector(3, "n", image_size=64, backbone=BACKBONES[name][0]())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    stem = next(model.backbone.parameters())  # the first conv's weight
    before = stem.detach().clone()
    losses = criterion()(model(torch.rand(2, 3, 64, 64)), *targets()).losses
    assert all(torch.isfinite(v) for v in losses.values()) and losses["box"] > 0
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert stem.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(stem, before)


def norms(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def frozen(name: str, spec) -> YOLODetector:
    """The detector on backbone `name`, frozen by `spec` as the runner does, in training mode as Lightning sets it."""
    model = YOLODetector(3, "n", image_size=64, backbone=BACKBONES[name][0]())
    prepare_model(model, freeze=spec)
    LitDetector(model, None, None, None).train()
    return model


@pytest.mark.parametrize("name", LIGHT)
def test_freeze_backbone_keeps_its_weights_and_norm_statistics_until_unfrozen(name):
    model = frozen(name, "backbone")
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in [*model.neck.parameters(), *model.head.parameters()])
    assert not any(m.training for m in norms(model.backbone)) and all(m.training for m in norms(model.neck))
    stats = [m.running_mean.clone() for m in norms(model.backbone)]
    neck_stats = norms(model.neck)[0].running_mean.clone()
    losses = criterion()(model(torch.rand(2, 3, 64, 64)), *targets()).losses
    losses["loss"].backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert all(torch.equal(m.running_mean, s) for m, s in zip(norms(model.backbone), stats))
    assert not torch.equal(norms(model.neck)[0].running_mean, neck_stats)

    holder = LitDetector(model, None, None, None).train()
    assert not any(m.training for m in norms(model.backbone))  # still, after another train()
    trainer = type("FakeTrainer", (), {"current_epoch": 3})()
    Unfreeze(epoch=3).on_train_epoch_start(trainer, holder)
    assert all(p.requires_grad for p in model.parameters()) and all(m.training for m in norms(model))
    model.eval()
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("name", LIGHT)
def test_freeze_by_stage_count(name):
    model = frozen(name, 3)
    for index, stage in enumerate(STAGES):
        parameters = list(getattr(model.backbone, stage).parameters())
        assert all(p.requires_grad == (index >= 3) for p in parameters), stage
        assert all(m.training == (index >= 3) for m in norms(getattr(model.backbone, stage))), stage
    stages = r"a number of backbone stages \(0\.\.5: stem, stage2, stage3, stage4, stage5\).*got 6"
    with pytest.raises(ValueError, match=stages):
        frozen(name, 6)


def test_hydra_backbone_group_builds_the_detector(compose_config, tmp_path):
    cfg = compose_config(["model/backbone=mobilenet_v3_large", "data.img_size=64", "model.freeze=backbone",
                          f"paths.data_dir={tmp_path}"], return_hydra_config=True)
    assert cfg.model.backbone == {"_target_": "detector.models.backbones.torchvision.MobileNetV3", "pretrained": False,
                                  "weights": None}  # the deprecated names, off
    HydraConfig.instance().set_config(cfg)
    module = hydra.utils.instantiate(cfg.module)
    model = module.model
    assert isinstance(model, YOLODetector) and isinstance(model.backbone, MobileNetV3)
    assert all(p.requires_grad for p in model.parameters())  # built only
    prepare_run_model(module, cfg)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert compose_config().model.backbone == {"_target_": "detector.models.backbones.csp.CSPDarknet", "scale": "n"}
    assert compose_config(["model.scale=s"]).model.backbone.scale == "s"


@pytest.mark.parametrize(("name", "option"), [("resnet34", "model.pretrained_backbone"),
                                            ("resnet50", "model.backbone.pretrained")])
def test_hydra_pretrained_true_loads_the_imagenet_weights(compose_config, fake_download, name, option, tmp_path):
    cfg = compose_config([f"model/backbone={name}", f"{option}=true", f"paths.data_dir={tmp_path}"],
                         return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    module = hydra.utils.instantiate(cfg.module)
    assert fake_download == []  # building fetches nothing
    with pytest.warns(FutureWarning, match="model.backbone.pretrained is deprecated") if "backbone." in option else nullcontext():
        prepare_run_model(module, cfg)
    assert fake_download == [BACKBONES[name][3].url] and module.model.backbone.stem[0].weight.eq(0.5).all()


@pytest.mark.parametrize("layout", ["today", "before December 2026"])
def test_checkpoint_of_a_pretrained_run_rebuilds_without_downloading(tmp_path, monkeypatch, layout):
    from detector.deploy.load import load_detector

    def no_download(*args, **kwargs):
        raise AssertionError("load_detector must not fetch ImageNet weights: the checkpoint has the weights")

    monkeypatch.setattr(torchvision_api, "load_state_dict_from_url", no_download)
    model = YOLODetector(3, "n", image_size=64, backbone=ResNet(18))
    weights = {"pretrained_backbone": True, "backbone_weights": str(tmp_path / "gone.pth")}  # nor the local file
    if layout != "today":  # the weight options inside the backbone's config
        weights = {"backbone": {"pretrained": True, "weights": str(tmp_path / "gone.pth")}}
    config = {"model": {
        "_target_": "detector.models.YOLODetector", "num_classes": 3, "scale": "n", "image_size": 64,
        "init_from": str(tmp_path / "gone.ckpt"), "freeze": "backbone",  # the fine-tuning source need not exist
        "backbone": {"_target_": "detector.models.backbones.torchvision.ResNet", "depth": 18, **weights.pop("backbone", {})},
        **weights,
    }}
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "run_config": config}, path)
    loaded, _, _ = load_detector(path, "cpu")
    assert torch.equal(loaded.backbone.stem[0].weight, model.backbone.stem[0].weight)
    assert all(p.requires_grad for p in loaded.parameters())  # `freeze` is the training side's


@pytest.mark.parametrize("name", LIGHT)
def test_onnx_export_matches_pytorch(name, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from detector.deploy.export import build_export_module, export_onnx, verify_onnx

    model = YOLODetector(3, "n", image_size=64, backbone=BACKBONES[name][0]()).eval()
    module = build_export_module(model, Postprocessor())
    path = export_onnx(module, tmp_path / f"{name}.onnx", 64)
    report = verify_onnx(path, module, 64, batch_size=2)  # raises on a mismatch
    assert report["boxes_shape"] == [2, 8 * 8 + 4 * 4 + 2 * 2, 4]
