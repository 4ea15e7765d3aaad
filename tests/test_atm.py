import pytest
import torch

from atm_core import ATM, ATMBlock
from atm_core.atm import ATMOptions


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "channels, ops, expected",
    [
        (768, ("mul",), 797_068),
        (768, ("sub",), 750_080),
        (768, ("add",), 750_080),
        (768, ("div",), 750_080),
        (768, ("mul", "sub"), 1_547_148),
        (1024, ("mul", "sub"), 1_874_828),
    ],
)
def test_parameter_counts_equal_the_reference(channels, ops, expected):
    assert n_params(ATM(channels, 8, ATMOptions(ops=ops))) == expected


@pytest.mark.parametrize("op", ["mul", "sub"])
def test_narrow_block_parameter_count(op):
    """Every layer's count written out for C=96, D=16, width 32, K=5 (convs 3x3, BN weight+bias)."""
    C, D, width, K = 96, 16, 32, 5
    conv_bn = lambda i, o: 9 * i * o + 2 * o  # noqa: E731
    encoder = conv_bn(1, 4) + conv_bn(4, 16) + conv_bn(16, width) + conv_bn(width, width)
    expected = (conv_bn(C, D) + (encoder if op == "mul" else 0)
                + conv_bn(width if op == "mul" else D, width) + conv_bn(width, width)
                + conv_bn(K * width, width) + width * C)
    assert n_params(ATMBlock(C, 8, op, ATMOptions(hidden=D, width=width))) == expected


def randomise(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.2 + (1.0 if p.dim() == 1 else 0.0))


@pytest.mark.parametrize("op", ["sub", "mul"])
def test_fuse_reads_offsets_in_offset_major_channel_groups(op):
    """With the fuse conv reading only the channel group of offset +2, frame t's branch depends on
    frames t and t+2 only: the regrouping is offset-major and the time padding is zeros (so the
    correlation of the last two frames with their missing neighbour is zero whatever they hold)."""
    T, K, width = 5, 5, 16
    block = ATMBlock(12, T, op, ATMOptions(hidden=8, width=width, impl="plain")).double()
    randomise(block)
    with torch.no_grad():
        kept = block.fuse[0].weight[:, (K - 1) * width :].clone()
        block.fuse[0].weight.zero_()
        block.fuse[0].weight[:, (K - 1) * width :] = kept
    block.eval()  # batch statistics would mix frames
    x = torch.randn(T, 12, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        base = block.branch(x)
        for moved in range(T):
            y = x.clone()
            y[moved] += torch.randn_like(y[moved])
            changed = [(block.branch(y)[t] - base[t]).abs().max() > 1e-9 for t in range(T)]
            reads_anchor = op == "sub" or moved + 2 < T
            expected = [t == moved - 2 or (t == moved and reads_anchor) for t in range(T)]
            assert changed == expected, (moved, changed)


def test_auto_impl_runs_the_kernels_on_cpu_only():
    block = ATMBlock(8, 2, "sub", ATMOptions(hidden=4))
    assert block.uses_cpu_fast(torch.zeros(1))
    assert not block.uses_cpu_fast(torch.zeros(1, device="meta"))
    block.impl = "plain"
    assert not block.uses_cpu_fast(torch.zeros(1))


def test_identity_residual_is_exact_identity_at_init_and_relu_clips():
    x = torch.randn(2 * 4, 16, 5, 5)
    assert torch.equal(ATM(16, 4, ATMOptions(ops=("mul", "sub", "add", "div"), residual="identity"))(x), x)
    assert torch.equal(ATM(16, 4, ATMOptions(ops=("sub",), residual="relu"))(x), torch.relu(x))


def test_blocks_compose_in_order():
    atm = ATM(8, 2, ATMOptions(ops=("mul", "sub"), hidden=4, residual="identity"))
    randomise(atm)
    x = torch.randn(4, 8, 4, 4)
    torch.testing.assert_close(atm(x), atm[1](atm[0](x)))
    assert [b.op for b in atm] == ["mul", "sub"]


def test_backward_reaches_every_parameter():
    atm = ATM(16, 4, ATMOptions(ops=("mul", "sub", "add", "div"), hidden=8, residual="identity"))
    for block in atm:
        torch.nn.init.normal_(block.proj.weight, std=0.1)  # zero-init would zero upstream gradients
    x = torch.randn(2 * 4, 16, 6, 6, requires_grad=True)
    atm(x).square().sum().backward()
    for name, p in atm.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_zero_initialised_projection_still_gets_gradient():
    atm = ATM(16, 4, ATMOptions(ops=("mul",), hidden=8, residual="identity"))
    atm(torch.randn(8, 16, 6, 6)).sum().backward()
    assert atm[0].proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("impl", ["plain", "cpu_fast"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_with_large_activations_stays_finite(dtype, impl):
    atm = ATM(16, 4, ATMOptions(ops=("mul", "sub", "add", "div"), hidden=8, impl=impl))
    for block in atm:
        torch.nn.init.normal_(block.proj.weight, std=0.1)
    x = torch.randn(8, 16, 6, 6) * 1e4
    with torch.autocast("cpu", dtype=dtype):
        y = atm(x)
    assert torch.isfinite(y).all()


def test_clear_errors():
    with pytest.raises(ValueError, match="unknown ATM op 'mod'"):
        ATM(8, 4, ATMOptions(ops=("mul", "mod")))
    with pytest.raises(ValueError, match="non-empty sequence"):
        ATM(8, 4, ATMOptions(ops=()))
    with pytest.raises(ValueError, match="got the string 'mul'"):
        ATM(8, 4, ATMOptions(ops="mul"))
    with pytest.raises(ValueError, match=r"ATM option 'impl': must be one of \['auto', 'plain', 'cpu_fast', 'cpu_fused'\], got 'cuda'"):
        ATM(8, 4, ATMOptions(ops=("sub",), impl="cuda"))
    with pytest.raises(ValueError, match="context must be a positive odd number of frames, got 4"):
        ATM(8, 4, ATMOptions(ops=("sub",), context=4))
    with pytest.raises(ValueError, match="ATM option 'residual': must be one of .*got 'gelu'"):
        ATM(8, 4, ATMOptions(ops=("sub",), residual="gelu"))
    with pytest.raises(ValueError, match="not divisible by num_frames=4"):
        ATM(8, 4, ATMOptions(ops=("sub",)))(torch.zeros(6, 8, 4, 4))
    with pytest.raises(ValueError, match="even feature map"):
        ATM(8, 2, ATMOptions(ops=("sub",), downsample=True))(torch.zeros(4, 8, 7, 7))
