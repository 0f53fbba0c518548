"""The blog post's claimed figures: the only numbers in the report that no artifact produced.

One run each, seed 42, 50 epochs at 128 px (docs/the-post.md#the-claim): the recipe, datasets
included, is the paper profile of params.yaml (config.post_setting). Throughput was timed around the
whole validation DataLoader loop on a V100 with batch 128; the post gives none for ResNet18.
"""

SEED = 42  # the post's one run per configuration
SOURCE = f"the NA blog post (PaddlePaddle, AI Studio): one run each, seed {SEED}"
THROUGHPUT_SETUP = "V100, batch 128, timed around the whole validation loader loop"

CLAIMS = {
    "alexnet-none": {"train_acc": 0.7700, "val_acc": 0.79668,
                     "params": 7_524_042, "throughput_img_s": 1598},
    "alexnet-na-blog": {"train_acc": 0.8540, "val_acc": 0.84583,
                        "params": 7_524_052, "throughput_img_s": 1629},
    "resnet18-none": {"train_acc": 0.9876, "val_acc": 0.67346,
                      "params": 11_237_412, "throughput_img_s": None},
    "resnet18-na-blog": {"train_acc": 0.9905, "val_acc": 0.68434,
                         "params": 11_237_428, "throughput_img_s": None},
}
