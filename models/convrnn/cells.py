"""Recurrent cells of the ConvRNN family (Nayebi et al. 2018/2022), written from the
equations of docs/convrnn-spec.md section 2.

Every cell has the same interface:

    cell.init_state(x_template) -> tuple of zero tensors (the state at t = 0)
    cell(x, state, x_res=None, fb=None) -> (output, new_state)

* ``x`` is the cell input (the layer's pre-conv output),
* ``x_res`` is the layer input *before* the pre-conv (used by the RGC cells' residual paths),
* ``fb`` is the concatenation of the (already resized) feedback inputs, or None.

All convolutions are stride 1 with TensorFlow ``SAME`` padding (extra pad bottom/right).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

TF_LN_EPS = 1e-12


def same_pads(k: int, stride: int = 1, size: int | None = None):
    """TF SAME padding for one spatial axis: (before, after)."""
    if stride == 1 or size is None:
        total = k - 1
    else:
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Module):
    """Conv2d with TF 'SAME' padding (asymmetric when the padding is odd), or 'VALID'."""

    def __init__(self, cin, cout, k, stride=1, bias=True, padding="same", in_size=None, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=0, bias=bias, groups=groups)
        self.pad = None
        assert stride == 1 or in_size is not None, "strided SAME padding needs the input size"
        if padding == "same":
            ph = same_pads(k, stride, None if in_size is None else in_size[0])
            pw = same_pads(k, stride, None if in_size is None else in_size[1])
            if ph[0] == ph[1] and pw[0] == pw[1]:
                self.conv.padding = (ph[0], pw[0])
            else:
                self.pad = (pw[0], pw[1], ph[0], ph[1])
        self.k = k

    def forward(self, x):
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return self.conv(x)


class DSConv2d(nn.Module):
    """Depthwise k x k (multiplier 1, no bias) -> pointwise 1x1 -> + bias (spec: DSk)."""

    def __init__(self, cin, cout, k):
        super().__init__()
        self.depthwise = SameConv2d(cin, cin, k, bias=False, groups=cin)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=True)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


def tf_layer_norm(x, gamma, beta, eps=TF_LN_EPS):
    """tf.contrib.layers.layer_norm: statistics over (C,H,W) per sample, biased variance,
    per-channel gamma/beta. Written out by hand (torch.nn.LayerNorm([C,H,W]) has
    per-element affine parameters, which is not what TF does)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    var = (x - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    return y * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)


class LayerNorm(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return tf_layer_norm(x, self.gamma, self.beta)


class Cell(nn.Module):
    """Base class. ``state_channels`` lists the channel count of each state tensor
    (the state lives at the cell's input spatial size)."""

    kind = "cell"
    # Only cells with feedback weights take long-range feedback; the others would drop it silently.
    accepts_feedback = False
    state_channels: tuple = ()
    out_channels: int = 0

    def init_state(self, x):
        n, _, h, w = x.shape
        return tuple(x.new_zeros((n, c, h, w)) for c in self.state_channels)


class FeedForward(Cell):
    """Identity memory: a plain feedforward layer."""

    kind = "feedforward"

    def __init__(self, in_channels, **_):
        super().__init__()
        self.out_channels = in_channels
        self.state_channels = ()

    def forward(self, x, state, x_res=None, fb=None):
        return x, ()


class TimeDecay(Cell):
    """s_t = m * s_{t-1} + x_t, one learned unconstrained scalar m per layer (init 0)."""

    kind = "timedecay"

    def __init__(self, in_channels, **_):
        super().__init__()
        self.out_channels = in_channels
        self.state_channels = (in_channels,)
        self.memory_decay = nn.Parameter(torch.zeros(()))

    def forward(self, x, state, x_res=None, fb=None):
        (s,) = state
        s = self.memory_decay * s + x
        return s, (s,)


class SimpleRNN(Cell):
    """ConvNormBasicCell: h = ELU(LN(W_i*x + b_i + W_s*h + b_s)); LN optional."""

    kind = "simplernn"

    def __init__(self, in_channels, out=None, k=3, layer_norm=True, **_):
        super().__init__()
        out = out or in_channels
        self.out_channels = out
        self.state_channels = (out,)
        self.i = SameConv2d(in_channels, out, k)
        self.s = SameConv2d(out, out, k)
        self.ln = LayerNorm(out) if layer_norm else None

    def forward(self, x, state, x_res=None, fb=None):
        (h,) = state
        z = self.i(x) + self.s(h)
        if self.ln is not None:
            z = self.ln(z)
        h = F.elu(z)
        return h, (h,)


class GRU(Cell):
    """[r^,u^] = W*[x,h]+b; r = sig(r^ + 1) (forget bias on the reset gate), u = sig(u^);
    c = tanh(W_c*[x, r*h] + b_c); h = u*h + (1-u)*c."""

    kind = "gru"

    def __init__(self, in_channels, out=None, k=3, forget_bias=1.0, **_):
        super().__init__()
        out = out or in_channels
        self.out_channels = out
        self.state_channels = (out,)
        self.forget_bias = forget_bias
        self.gates = SameConv2d(in_channels + out, 2 * out, k)
        self.candidate = SameConv2d(in_channels + out, out, k)

    def forward(self, x, state, x_res=None, fb=None):
        (h,) = state
        r_hat, u_hat = self.gates(torch.cat([x, h], 1)).chunk(2, 1)
        r = torch.sigmoid(r_hat + self.forget_bias)
        u = torch.sigmoid(u_hat)
        c = torch.tanh(self.candidate(torch.cat([x, r * h], 1)))
        h = u * h + (1 - u) * c
        return h, (h,)


class LSTM(Cell):
    """[i,j,f,o] = W*[x,h]+b; c' = c*sig(f+fb) + sig(i)*tanh(j); h = tanh(c')*sig(o).
    Optional layer norm on i, j, f, o and c' (each its own gamma/beta); optional
    peepholes w_{i,f,o} of shape [C,H,W] reading the *old* c (also for the output gate).
    State is (c, h)."""

    kind = "lstm"

    def __init__(self, in_channels, out=None, k=3, forget_bias=1.0, layer_norm=False,
                 peepholes=False, spatial=None, **_):
        super().__init__()
        out = out or in_channels
        self.out_channels = out
        self.state_channels = (out, out)
        self.forget_bias = float(forget_bias)
        self.W = SameConv2d(in_channels + out, 4 * out, k)
        self.layer_norm = layer_norm
        if layer_norm:
            self.ln = nn.ModuleList([LayerNorm(out) for _ in range(5)])  # i, j, f, o, c
        self.peepholes = peepholes
        if peepholes:
            assert spatial is not None, "peepholes need the spatial size"
            h_, w_ = spatial
            self.w_i = nn.Parameter(torch.empty(out, h_, w_).uniform_(-0.1, 0.1))
            self.w_f = nn.Parameter(torch.empty(out, h_, w_).uniform_(-0.1, 0.1))
            self.w_o = nn.Parameter(torch.empty(out, h_, w_).uniform_(-0.1, 0.1))

    def forward(self, x, state, x_res=None, fb=None):
        c, h = state
        i, j, f, o = self.W(torch.cat([x, h], 1)).chunk(4, 1)
        if self.layer_norm:
            i, j, f, o = (self.ln[0](i), self.ln[1](j), self.ln[2](f), self.ln[3](o))
        if self.peepholes:
            i = i + self.w_i * c
            f = f + self.w_f * c
            o = o + self.w_o * c
        c_new = c * torch.sigmoid(f + self.forget_bias) + torch.sigmoid(i) * torch.tanh(j)
        if self.layer_norm:
            c_new = self.ln[4](c_new)
        h_new = torch.tanh(c_new) * torch.sigmoid(o)
        return h_new, (c_new, h_new)


class UGRNN(Cell):
    """[g^,c^] = W*[x,h]+b; g = sig(g^+1); h = g*h + (1-g)*tanh(c^)."""

    kind = "ugrnn"

    def __init__(self, in_channels, out=None, k=3, forget_bias=1.0, **_):
        super().__init__()
        out = out or in_channels
        self.out_channels = out
        self.state_channels = (out,)
        self.forget_bias = forget_bias
        self.W = SameConv2d(in_channels + out, 2 * out, k)

    def forward(self, x, state, x_res=None, fb=None):
        (h,) = state
        g_hat, c_hat = self.W(torch.cat([x, h], 1)).chunk(2, 1)
        g = torch.sigmoid(g_hat + self.forget_bias)
        h = g * h + (1 - g) * torch.tanh(c_hat)
        return h, (h,)


class IntersectionRNN(Cell):
    """[gh,hh,gy,yy] = W*[x,h]+b; h' = sig(gh+1)*h + (1-sig(gh+1))*tanh(hh) (state);
    y = sig(gy+1)*x + (1-sig(gy+1))*ReLU(yy) (output). Input channels == out channels."""

    kind = "intersectionrnn"

    def __init__(self, in_channels, out=None, k=3, forget_bias=1.0, **_):
        super().__init__()
        out = out or in_channels
        assert out == in_channels, "IntersectionRNN needs input channels == out channels"
        self.out_channels = out
        self.state_channels = (out,)
        self.forget_bias = forget_bias
        self.W = SameConv2d(in_channels + out, 4 * out, k)

    def forward(self, x, state, x_res=None, fb=None):
        (h,) = state
        gh, hh, gy, yy = self.W(torch.cat([x, h], 1)).chunk(4, 1)
        gh = torch.sigmoid(gh + self.forget_bias)
        gy = torch.sigmoid(gy + self.forget_bias)
        h_new = gh * h + (1 - gh) * torch.tanh(hh)
        y = gy * x + (1 - gy) * F.relu(yy)
        return y, (h_new,)


class RGCShallow(Cell):
    """Reciprocal gated cell of the shallow models (cells.py). C = cell depth = out depth;
    all six convs k x k, no bias:
        cin = W_ic * x
        c_t = ELU((1-sig(W_ct*c)) * c + (1-sig(W_cg*h)) * cin)
        h_t = ELU((1-sig(W_ht*h)) * h + (1-sig(W_hg*c + W_rg*x_res)) * x)
    State is (c, h); output h."""

    kind = "rgc"

    def __init__(self, in_channels, res_channels=None, k=3, **_):
        super().__init__()
        C = in_channels
        self.out_channels = C
        self.state_channels = (C, C)
        self.input_to_cell = SameConv2d(C, C, k, bias=False)
        self.cell_tau = SameConv2d(C, C, k, bias=False)
        self.cell_gate = SameConv2d(C, C, k, bias=False)
        self.out_tau = SameConv2d(C, C, k, bias=False)
        self.out_gate = SameConv2d(C, C, k, bias=False)
        self.residual_to_out_gate = SameConv2d(res_channels or C, C, k, bias=False)

    def forward(self, x, state, x_res=None, fb=None):
        c, h = state
        if x_res is None:
            x_res = x
        cin = self.input_to_cell(x)
        c_new = F.elu((1 - torch.sigmoid(self.cell_tau(c))) * c
                      + (1 - torch.sigmoid(self.cell_gate(h))) * cin)
        h_new = F.elu((1 - torch.sigmoid(self.out_tau(h))) * h
                      + (1 - torch.sigmoid(self.out_gate(c) + self.residual_to_out_gate(x_res))) * x)
        return h_new, (c_new, h_new)


class RGCMedian(Cell):
    """The "median" reciprocal gated cell of rgc_intermediate (median_rgcell.py):
        u   = ELU(x)
        cin = W_ic *2 u + b                                (C -> cell depth)
        c'  = (A - A*sig(DS7(c))) * c + (B - B*tanh(DS7'(h))) * cin
        c_t = ELU(c')
        oin = W_io *3 u + b + R(x_res) + (W_fb *1 fb + b)  (R: identity or 1x1 no bias)
        h'  = (A - A*sig(DS7''(h))) * h + (B - B*tanh(DS7'''(c))) * oin
        h_t = ELU(h')
    with A = 0.9219348064291611, B = 0.7006566684988862; the gates read the previous c and h. State (c, h)."""

    kind = "rgc_median"
    accepts_feedback = True

    def __init__(self, in_channels, res_channels=None, fb_channels=0, cell_depth=64,
                 input_to_cell_k=2, input_to_out_k=3, gate_k=7,
                 tau_offset=0.9219348064291611, tau_multiplier=0.9219348064291611,
                 gate_offset=0.7006566684988862, gate_multiplier=0.7006566684988862,
                 spatial=None, **_):
        super().__init__()
        C = in_channels
        D = cell_depth
        if spatial is not None:
            # the authors' RGC convs clip the kernel to the map (a no-op for 224 px inputs)
            limit = min(spatial)
            input_to_cell_k, input_to_out_k, gate_k = (
                min(k, limit) for k in (input_to_cell_k, input_to_out_k, gate_k))
        self.out_channels = C
        self.state_channels = (D, C)
        self.tau_offset, self.tau_multiplier = float(tau_offset), float(tau_multiplier)
        self.gate_offset, self.gate_multiplier = float(gate_offset), float(gate_multiplier)
        self.input_to_cell = SameConv2d(C, D, input_to_cell_k)
        self.cell_tau = DSConv2d(D, D, gate_k)        # DS7 on c
        self.out_to_cell = DSConv2d(C, D, gate_k)     # DS7' on h -> c
        self.input_to_out = SameConv2d(C, C, input_to_out_k)
        self.out_tau = DSConv2d(C, C, gate_k)         # DS7'' on h
        self.cell_to_out = DSConv2d(D, C, gate_k)     # DS7''' on c -> h
        res_channels = res_channels or C
        self.residual = (None if res_channels == C
                         else nn.Conv2d(res_channels, C, 1, bias=False))
        self.feedback_to_out = nn.Conv2d(fb_channels, C, 1) if fb_channels else None

    def forward(self, x, state, x_res=None, fb=None):
        c, h = state
        u = F.elu(x)
        cin = self.input_to_cell(u)
        c_pre = ((self.tau_offset - self.tau_multiplier * torch.sigmoid(self.cell_tau(c))) * c
                 + (self.gate_offset - self.gate_multiplier * torch.tanh(self.out_to_cell(h))) * cin)
        oin = self.input_to_out(u)
        if x_res is not None:
            oin = oin + (x_res if self.residual is None else self.residual(x_res))
        if self.feedback_to_out is not None:
            assert fb is not None
            oin = oin + self.feedback_to_out(fb)
        h_pre = ((self.tau_offset - self.tau_multiplier * torch.sigmoid(self.out_tau(h))) * h
                 + (self.gate_offset - self.gate_multiplier * torch.tanh(self.cell_to_out(c))) * oin)
        c_new = F.elu(c_pre)
        h_new = F.elu(h_pre)
        return h_new, (c_new, h_new)


CELLS = {c.kind: c for c in (FeedForward, TimeDecay, SimpleRNN, GRU, LSTM, UGRNN,
                             IntersectionRNN, RGCShallow, RGCMedian)}
