import pytest
import torch

from semtok.models.rope import apply_rope, rope_1d, rope_2d


def _scores(n: int, dim: int, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """The same query and key vector at every position, rotated: (n, n) scores q_i . k_j."""
    torch.manual_seed(0)
    q = torch.randn(dim).expand(1, 1, n, dim)
    k = torch.randn(dim).expand(1, 1, n, dim)
    return (apply_rope(q, cos, sin) @ apply_rope(k, cos, sin).transpose(-1, -2))[0, 0]


def test_1d_scores_depend_only_on_offset():
    n, dim = 12, 16
    s = _scores(n, dim, *rope_1d(n, dim))
    for offset in range(-n + 1, n):
        diagonal = torch.diagonal(s, offset)
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(s[0, 0], s[0, 1], atol=1e-3)


def test_1d_accepts_explicit_positions():
    cos_a, sin_a = rope_1d(torch.arange(3, 8), 8)
    cos_b, sin_b = rope_1d(8, 8)
    torch.testing.assert_close(cos_a, cos_b[3:])
    torch.testing.assert_close(sin_a, sin_b[3:])


def test_2d_scores_depend_only_on_row_and_column_offsets():
    h, w, dim = 4, 5, 16
    s = _scores(h * w, dim, *rope_2d(h, w, dim)).view(h, w, h, w)
    # Shifting both positions by one row, or by one column, leaves every score unchanged.
    torch.testing.assert_close(s[1:, :, 1:, :], s[:-1, :, :-1, :], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s[:, 1:, :, 1:], s[:, :-1, :, :-1], atol=1e-5, rtol=1e-5)
    # ...while both offsets matter.
    assert not torch.allclose(s[0, 0, 0, 0], s[0, 0, 1, 0], atol=1e-3)
    assert not torch.allclose(s[0, 0, 0, 0], s[0, 0, 0, 1], atol=1e-3)
    assert not torch.allclose(s[0, 0, 1, 0], s[0, 0, 0, 1], atol=1e-3)


def test_rotation_preserves_norms_and_dtype():
    x = torch.randn(2, 3, 20, 16)
    for cos, sin in (rope_1d(20, 16), rope_2d(4, 5, 16)):
        torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))
    assert apply_rope(x.bfloat16(), *rope_1d(20, 16)).dtype == torch.bfloat16


def test_bad_dimensions_raise():
    with pytest.raises(ValueError):
        rope_1d(4, 7)
    with pytest.raises(ValueError):
        rope_2d(2, 2, 6)
