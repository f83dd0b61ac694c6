use russcip::prelude::*;
fn main() {
    let mut model = Model::default().hide_output().maximize();
    let x = model.add(var().bin().obj(3.).name("x"));
    let y = model.add(var().bin().obj(2.).name("y"));
    let z = model.add(var().int(0..5).obj(1.).name("z"));
    model.add(cons().name("c").coef(&x, 2.).coef(&y, 2.).coef(&z, 1.).le(3.));
    let s = model.solve();
    let sol = s.best_sol().unwrap();
    println!("{:?} obj={} x={} y={} z={}", s.status(), s.obj_val(), sol.val(&x), sol.val(&y), sol.val(&z));
}
