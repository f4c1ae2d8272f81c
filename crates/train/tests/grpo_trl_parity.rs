//! Numeric parity with TRL's GRPO loss (`GRPOTrainer._compute_loss`, trl 1.16) on fixed inputs,
//! for each aggregation, ratio level and clipping variant: the loss, its gradient with respect
//! to the per-token log-probs, the clip fractions and the KL metric. The fixture is written by
//! `scripts/make_grpo_loss_fixture.py`.

use reasonlab_model::tensor::{Device, Tensor, TensorData};
use reasonlab_train::grpo::{LossAgg, LossInputs, LossSettings, RatioLevel, grpo_loss};
use serde_json::Value;

fn matrix(v: &Value, device: &Device) -> Tensor<2> {
    let rows: Vec<Vec<f32>> = serde_json::from_value(v.clone()).unwrap();
    let (b, l) = (rows.len(), rows[0].len());
    let flat: Vec<f32> = rows.into_iter().flatten().collect();
    Tensor::from_data(TensorData::new(flat, [b, l]), device)
}

fn close(a: f32, b: f64, tol: f64) -> bool {
    (f64::from(a) - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn loss_gradient_and_metrics_match_trl() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/trl_grpo_loss.json"),
    )
    .unwrap();
    let fx: Value = serde_json::from_str(&text).unwrap();
    let device = Device::flex().autodiff();
    let advantages: Vec<f32> = serde_json::from_value(fx["advantages"].clone()).unwrap();
    let mask = matrix(&fx["mask"], &device);
    let [b, l] = mask.dims();
    let adv = Tensor::<1>::from_data(TensorData::new(advantages, [b]), &device)
        .reshape([b, 1])
        .repeat_dim(1, l);
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let aggregation = match case["loss_type"].as_str().unwrap() {
            "grpo" => LossAgg::SequenceMean,
            // DAPO normalises by the tokens of the whole generation batch: one batch here.
            "bnpo" | "dapo" => LossAgg::TokenMean,
            "dr_grpo" => LossAgg::Constant,
            other => panic!("{other}"),
        };
        let ratio = match case["importance_sampling_level"].as_str().unwrap() {
            "token" => RatioLevel::Token,
            "sequence" => RatioLevel::Sequence,
            other => panic!("{other}"),
        };
        let s = LossSettings {
            epsilon_low: case["epsilon_low"].as_f64().unwrap() as f32,
            epsilon_high: case["epsilon_high"].as_f64().unwrap() as f32,
            beta: case["beta"].as_f64().unwrap() as f32,
            ratio,
            aggregation,
        };
        let logp = matrix(&fx["logp"], &device).require_grad();
        let (loss, stats) = grpo_loss(
            &s,
            LossInputs {
                logp: logp.clone(),
                old_logp: matrix(&fx["old_logp"], &device),
                ref_logp: Some(matrix(&fx["ref_logp"], &device)),
                advantages: adv.clone(),
                mask: mask.clone(),
                max_len: fx["max_completion_length"].as_u64().unwrap() as usize,
                totals: None,
            },
        );
        let value = loss.clone().try_into_scalar::<f32>().unwrap();
        let want = case["loss"].as_f64().unwrap();
        assert!(
            close(value, want, 1e-5),
            "{name}: loss {value} vs TRL {want}"
        );
        let grads = loss.backward();
        let g = logp.grad(&grads).unwrap().try_into_vec_as::<f32>().unwrap();
        let want_g: Vec<Vec<f64>> = serde_json::from_value(case["grad"].clone()).unwrap();
        for (i, (&got, &exp)) in g.iter().zip(want_g.iter().flatten()).enumerate() {
            assert!(
                close(got, exp, 1e-5),
                "{name}: d loss / d logp[{}][{}] = {got} vs TRL {exp}",
                i / l,
                i % l
            );
        }
        for (what, got, key) in [
            ("clip_low", stats.clip_low, "clip_low"),
            ("clip_high", stats.clip_high, "clip_high"),
            ("kl", stats.kl, "kl"),
        ] {
            let exp = case[key].as_f64().unwrap();
            assert!(close(got, exp, 1e-5), "{name}: {what} {got} vs TRL {exp}");
        }
    }
}
