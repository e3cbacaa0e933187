"""Each cell against a step computed by hand (numpy) on a tiny tensor, with 1x1 kernels so
that every conv is a per-pixel matrix product; gates driven to their extremes as well."""
import numpy as np
import pytest
import torch

from convrnn import cells as C

rng = np.random.default_rng(0)


def sig(x):
    return 1 / (1 + np.exp(-x))


def elu(x):
    return np.where(x > 0, x, np.exp(x) - 1)


def conv1x1(conv, x):
    """numpy 1x1 conv: x [N,Ci,H,W] -> [N,Co,H,W] with the torch module's weights."""
    mod = conv.conv if isinstance(conv, C.SameConv2d) else conv
    w = mod.weight.detach().numpy()[:, :, 0, 0]
    y = np.einsum("oi,nihw->nohw", w, x)
    if mod.bias is not None:
        y = y + mod.bias.detach().numpy()[None, :, None, None]
    return y


def ds1x1(ds, x):
    d = ds.depthwise.conv.weight.detach().numpy()[:, 0, 0, 0]
    return conv1x1(ds.pointwise, x * d[None, :, None, None])


def T(a):
    return torch.tensor(a, dtype=torch.float32)


def ln(x, g, b, eps=1e-12):
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    v = ((x - m) ** 2).mean(axis=(1, 2, 3), keepdims=True)
    return (x - m) / np.sqrt(v + eps) * g[None, :, None, None] + b[None, :, None, None]


def randomize(mod, scale=0.5):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in mod.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def tensors(n=2, c=3, h=2, w=2, k=2):
    return [rng.standard_normal((n, c, h, w)).astype(np.float32) for _ in range(k)]


def run(cell, x, state, **kw):
    with torch.no_grad():
        y, s = cell(T(x), tuple(T(v) for v in state), **{k: (T(v) if v is not None else None) for k, v in kw.items()})
    return y.numpy(), [v.numpy() for v in s]


def test_feedforward_identity():
    cell = C.FeedForward(3)
    x, = tensors(k=1)
    y, s = run(cell, x, ())
    assert np.array_equal(y, x) and s == []


def test_timedecay():
    cell = C.TimeDecay(3)
    x, s0 = tensors()
    y, (s,) = run(cell, x, (s0,))
    np.testing.assert_allclose(y, x, atol=1e-6)  # m initialised to 0: a feedforward layer
    with torch.no_grad():
        cell.memory_decay.fill_(-0.7)
    y, (s,) = run(cell, x, (s0,))
    np.testing.assert_allclose(y, -0.7 * s0 + x, atol=1e-6)
    np.testing.assert_allclose(s, y, atol=0)


@pytest.mark.parametrize("layer_norm", [True, False])
def test_simplernn(layer_norm):
    cell = C.SimpleRNN(3, out=4, k=1, layer_norm=layer_norm)
    randomize(cell)
    x, = tensors(k=1)
    h0 = rng.standard_normal((2, 4, 2, 2)).astype(np.float32)
    y, (h,) = run(cell, x, (h0,))
    z = conv1x1(cell.i, x) + conv1x1(cell.s, h0)
    if layer_norm:
        z = ln(z, cell.ln.gamma.detach().numpy(), cell.ln.beta.detach().numpy())
    np.testing.assert_allclose(y, elu(z), atol=1e-5)
    np.testing.assert_allclose(h, y)


def test_tf_layer_norm_is_not_torch_layernorm():
    # per-channel gamma/beta, stats over (C,H,W), biased variance, eps 1e-12
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    g, b = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    y = C.tf_layer_norm(T(x), T(g), T(b)).numpy()
    np.testing.assert_allclose(y, ln(x, g, b), atol=1e-5)
    assert C.TF_LN_EPS == 1e-12


def test_gru():
    cell = C.GRU(3, k=1)
    randomize(cell)
    x, h0 = tensors()
    y, (h,) = run(cell, x, (h0,))
    rh, uh = np.split(conv1x1(cell.gates, np.concatenate([x, h0], 1)), 2, 1)
    r, u = sig(rh + 1.0), sig(uh)
    c = np.tanh(conv1x1(cell.candidate, np.concatenate([x, r * h0], 1)))
    np.testing.assert_allclose(y, u * h0 + (1 - u) * c, atol=1e-5)
    # extremes: update gate saturated at 1 keeps the state, at 0 takes the candidate
    with torch.no_grad():
        cell.gates.conv.bias[3:].fill_(60.0)
    y, _ = run(cell, x, (h0,))
    np.testing.assert_allclose(y, h0, atol=1e-5)
    with torch.no_grad():
        cell.gates.conv.bias[3:].fill_(-60.0)
        cell.gates.conv.bias[:3].fill_(-60.0)  # reset gate 0: candidate ignores h
    y, _ = run(cell, x, (h0,))
    np.testing.assert_allclose(y, np.tanh(conv1x1(cell.candidate, np.concatenate([x, 0 * h0], 1))), atol=1e-5)


@pytest.mark.parametrize("layer_norm,peep", [(False, False), (True, True), (False, True)])
def test_lstm(layer_norm, peep):
    cell = C.LSTM(3, k=1, forget_bias=1.356, layer_norm=layer_norm, peepholes=peep, spatial=(2, 2))
    randomize(cell)
    x, c0, h0 = tensors(k=3)
    y, (c, h) = run(cell, x, (c0, h0))
    i, j, f, o = np.split(conv1x1(cell.W, np.concatenate([x, h0], 1)), 4, 1)
    if layer_norm:
        i, j, f, o = [ln(v, cell.ln[k].gamma.detach().numpy(), cell.ln[k].beta.detach().numpy())
                      for k, v in enumerate((i, j, f, o))]
    if peep:
        i = i + cell.w_i.detach().numpy() * c0
        f = f + cell.w_f.detach().numpy() * c0
        o = o + cell.w_o.detach().numpy() * c0  # the output peephole reads the OLD c
    cn = c0 * sig(f + 1.356) + sig(i) * np.tanh(j)
    if layer_norm:
        cn = ln(cn, cell.ln[4].gamma.detach().numpy(), cell.ln[4].beta.detach().numpy())
    np.testing.assert_allclose(c, cn, atol=1e-5)
    np.testing.assert_allclose(y, np.tanh(cn) * sig(o), atol=1e-5)
    np.testing.assert_allclose(h, y)


def test_lstm_extremes():
    cell = C.LSTM(3, k=1, forget_bias=0.0)
    randomize(cell)
    x, c0, h0 = tensors(k=3)
    with torch.no_grad():
        b = cell.W.conv.bias
        b[0:3].fill_(-60)   # input gate closed
        b[6:9].fill_(60)    # forget gate open
        b[9:12].fill_(60)   # output gate open
    y, (c, h) = run(cell, x, (c0, h0))
    np.testing.assert_allclose(c, c0, atol=1e-5)
    np.testing.assert_allclose(y, np.tanh(c0), atol=1e-5)


def test_ugrnn():
    cell = C.UGRNN(3, k=1)
    randomize(cell)
    x, h0 = tensors()
    y, (h,) = run(cell, x, (h0,))
    g, c = np.split(conv1x1(cell.W, np.concatenate([x, h0], 1)), 2, 1)
    g = sig(g + 1)
    np.testing.assert_allclose(y, g * h0 + (1 - g) * np.tanh(c), atol=1e-5)
    with torch.no_grad():
        cell.W.conv.bias[:3].fill_(-60)
    y, _ = run(cell, x, (h0,))
    np.testing.assert_allclose(y, np.tanh(c), atol=1e-5)


def test_intersectionrnn():
    cell = C.IntersectionRNN(3, k=1)
    randomize(cell)
    x, h0 = tensors()
    y, (h,) = run(cell, x, (h0,))
    gh, hh, gy, yy = np.split(conv1x1(cell.W, np.concatenate([x, h0], 1)), 4, 1)
    gh, gy = sig(gh + 1), sig(gy + 1)
    np.testing.assert_allclose(h, gh * h0 + (1 - gh) * np.tanh(hh), atol=1e-5)
    np.testing.assert_allclose(y, gy * x + (1 - gy) * np.maximum(yy, 0), atol=1e-5)
    with torch.no_grad():  # output gate fully open: y is the input itself
        cell.W.conv.bias[6:9].fill_(60)
    y, _ = run(cell, x, (h0,))
    np.testing.assert_allclose(y, x, atol=1e-5)


def test_rgc_shallow():
    cell = C.RGCShallow(3, res_channels=2, k=1)
    randomize(cell)
    assert all(m.conv.bias is None for m in cell.modules() if isinstance(m, C.SameConv2d))
    x, c0, h0 = tensors(k=3)
    xr = rng.standard_normal((2, 2, 2, 2)).astype(np.float32)
    y, (c, h) = run(cell, x, (c0, h0), x_res=xr)
    cin = conv1x1(cell.input_to_cell, x)
    cn = elu((1 - sig(conv1x1(cell.cell_tau, c0))) * c0 + (1 - sig(conv1x1(cell.cell_gate, h0))) * cin)
    hn = elu((1 - sig(conv1x1(cell.out_tau, h0))) * h0
             + (1 - sig(conv1x1(cell.out_gate, c0) + conv1x1(cell.residual_to_out_gate, xr))) * x)
    np.testing.assert_allclose(c, cn, atol=1e-5)
    np.testing.assert_allclose(y, hn, atol=1e-5)
    # extremes: all gate convs saturated (huge weights on a positive state) close the gates
    with torch.no_grad():
        for m in (cell.cell_tau, cell.cell_gate, cell.out_tau, cell.out_gate, cell.residual_to_out_gate):
            m.conv.weight.fill_(100.0)
    pos = [np.abs(v) + 0.5 for v in (x, c0, h0)]
    xr = np.abs(xr) + 0.5
    y, (c, h) = run(cell, pos[0], (pos[1], pos[2]), x_res=xr)
    np.testing.assert_allclose(c, 0, atol=1e-5)   # ELU(0*c + 0*cin)
    np.testing.assert_allclose(y, 0, atol=1e-5)
    with torch.no_grad():
        for m in (cell.cell_tau, cell.cell_gate, cell.out_tau, cell.out_gate, cell.residual_to_out_gate):
            m.conv.weight.fill_(-100.0)
    y, (c, h) = run(cell, pos[0], (pos[1], pos[2]), x_res=xr)
    cin = conv1x1(cell.input_to_cell, pos[0])
    np.testing.assert_allclose(c, elu(pos[1] + cin), atol=1e-4)  # gates fully open
    np.testing.assert_allclose(y, elu(pos[2] + pos[0]), atol=1e-4)


@pytest.mark.parametrize("res_ch,fb_ch", [(3, 0), (2, 5)])
def test_rgc_median(res_ch, fb_ch):
    A, B = 0.9219348064291611, 0.7006566684988862
    cell = C.RGCMedian(3, res_channels=res_ch, fb_channels=fb_ch, cell_depth=4,
                       input_to_cell_k=1, input_to_out_k=1, gate_k=1)
    randomize(cell)
    x, h0 = tensors()
    c0 = rng.standard_normal((2, 4, 2, 2)).astype(np.float32)
    xr = rng.standard_normal((2, res_ch, 2, 2)).astype(np.float32)
    fb = rng.standard_normal((2, fb_ch, 2, 2)).astype(np.float32) if fb_ch else None
    y, (c, h) = run(cell, x, (c0, h0), x_res=xr, fb=fb)
    u = elu(x)
    cin = conv1x1(cell.input_to_cell, u)
    cp = (A - A * sig(ds1x1(cell.cell_tau, c0))) * c0 + (B - B * np.tanh(ds1x1(cell.out_to_cell, h0))) * cin
    oin = conv1x1(cell.input_to_out, u) + (xr if res_ch == 3 else conv1x1(cell.residual, xr))
    if fb_ch:
        oin = oin + conv1x1(cell.feedback_to_out, fb)
    hp = (A - A * sig(ds1x1(cell.out_tau, h0))) * h0 + (B - B * np.tanh(ds1x1(cell.cell_to_out, c0))) * oin
    np.testing.assert_allclose(c, elu(cp), atol=1e-5)
    np.testing.assert_allclose(y, elu(hp), atol=1e-5)
    if res_ch != 3:
        assert cell.residual.bias is None
    # extremes: tau gates saturated high -> memory term vanishes (A - A*1 = 0); the
    # input gates saturated at tanh = -1 -> input weight 2B
    with torch.no_grad():
        for ds in (cell.cell_tau, cell.out_tau):
            ds.pointwise.bias.fill_(60.0)
        for ds in (cell.out_to_cell, cell.cell_to_out):
            ds.pointwise.bias.fill_(-60.0)
    y, (c, h) = run(cell, x, (c0, h0), x_res=xr, fb=fb)
    np.testing.assert_allclose(c, elu(2 * B * cin), atol=1e-5)
    np.testing.assert_allclose(y, elu(2 * B * oin), atol=1e-5)


def test_same_padding_is_tf_like():
    # TF SAME: extra padding at the bottom/right (k=2 -> (0,1), k=4 -> (1,2), 7x7/2 on 224 -> (2,3))
    assert C.same_pads(2) == (0, 1) and C.same_pads(4) == (1, 2) and C.same_pads(3) == (1, 1)
    assert C.same_pads(7, 2, 224) == (2, 3)
    conv = C.SameConv2d(1, 1, 2, bias=False)
    with torch.no_grad():
        conv.conv.weight.fill_(1.0)
    x = torch.arange(9.0).view(1, 1, 3, 3)
    y = conv(x)[0, 0].detach().numpy()
    xp = np.pad(np.arange(9.0).reshape(3, 3), ((0, 1), (0, 1)))
    ref = np.array([[xp[i:i + 2, j:j + 2].sum() for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(y, ref)
