"""The post's two networks. Each places its attention modules through `make_attention(name, channels)`."""

from __future__ import annotations

import paddle
from paddle import nn

from pipeline.models.attention import make_attention


def _alexnet_feature_size(image_size: int) -> int:
    """Spatial size after AlexNet's feature extractor (conv k11 s4 p5, three 3/2 max pools)."""
    size = (image_size + 2 * 5 - 11) // 4 + 1
    for _ in range(3):
        size = (size - 3) // 2 + 1
    return size


class AlexNet(nn.Layer):
    """The post's AlexNet; the classifier input follows from the image size (1152 at 128 px)."""

    def __init__(self, num_classes: int, image_size: int, attention: str = "none"):
        super().__init__()
        side = _alexnet_feature_size(image_size)
        if side < 1:
            raise ValueError(f"AlexNet needs images of at least 57 px, got {image_size}")

        def conv(cin, cout, **kw):
            return [nn.Conv2D(cin, cout, **kw), make_attention(attention, cout), nn.ReLU()]

        self.features = nn.Sequential(
            *conv(3, 48, kernel_size=11, stride=4, padding=5),
            nn.MaxPool2D(kernel_size=3, stride=2),
            *conv(48, 128, kernel_size=5, padding=2),
            nn.MaxPool2D(kernel_size=3, stride=2),
            *conv(128, 192, kernel_size=3, padding=1),
            *conv(192, 192, kernel_size=3, padding=1),
            *conv(192, 128, kernel_size=3, padding=1),
            nn.MaxPool2D(kernel_size=3, stride=2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(side * side * 128, 2048), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(2048, 2048), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(2048, num_classes),
        )

    def forward(self, x):
        return self.classifier(paddle.flatten(self.features(x), 1))


class BasicBlock(nn.Layer):
    """Paddle's ResNet BasicBlock with one attention module after bn2, before the add."""

    def __init__(self, cin: int, cout: int, stride: int, attention: str):
        super().__init__()
        self.conv1 = nn.Conv2D(cin, cout, 3, stride=stride, padding=1, bias_attr=False)
        self.bn1 = nn.BatchNorm2D(cout)
        self.conv2 = nn.Conv2D(cout, cout, 3, padding=1, bias_attr=False)
        self.bn2 = nn.BatchNorm2D(cout)
        self.attention = make_attention(attention, cout)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2D(cin, cout, 1, stride=stride, bias_attr=False), nn.BatchNorm2D(cout)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attention(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class ResNet18(nn.Layer):
    """Paddle's ImageNet-style ResNet18: 7x7 stem, max pool, four stages of two blocks."""

    def __init__(self, num_classes: int, image_size: int, attention: str = "none"):
        super().__init__()  # any image size: global pooling before the classifier
        self.stem = nn.Sequential(
            nn.Conv2D(3, 64, 7, stride=2, padding=3, bias_attr=False),
            nn.BatchNorm2D(64), nn.ReLU(), nn.MaxPool2D(3, stride=2, padding=1),
        )
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(cin, cout, stride, attention), BasicBlock(cout, cout, 1, attention)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        return self.fc(paddle.flatten(self.pool(self.blocks(self.stem(x))), 1))
