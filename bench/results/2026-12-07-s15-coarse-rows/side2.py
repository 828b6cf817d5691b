import numpy as np, sys
exec(open('/tmp/s14/exp/frontier2.py').read().split('for L in sys.argv')[0])
for L in sys.argv[1:]:
    Ac,Uc=load(f'/tmp/s14/exp/cal-L{L}.f32'); At,Ut=load(f'/tmp/s14/exp/gpl-L{L}.f32')
    Ac,Uc,At,Ut=Ac[1:],Uc[1:],At[1:],Ut[1:]
    hc=Ac*Uc; ht=At*Ut
    mu=np.abs(Uc).mean(0); ma=np.abs(Ac).mean(0)
    # regression scales: |h| ~ s*|a|
    su=(np.abs(hc)*np.abs(Ac)).sum(0)/(Ac**2).sum(0)
    sa=(np.abs(hc)*np.abs(Uc)).sum(0)/(Uc**2).sum(0)
    # per-neuron choice by residual error of the regression
    ea=((np.abs(hc)-su*np.abs(Ac))**2).sum(0); eu=((np.abs(hc)-sa*np.abs(Uc))**2).sum(0)
    # per-neuron choice by error of mean-scale predictor on h^2 weighted
    ea2=((np.abs(hc)-mu*np.abs(Ac))**2).sum(0); eu2=((np.abs(hc)-ma*np.abs(Uc))**2).sum(0)
    upf=eu<ea; upf2=eu2<ea2
    print(f'L{L}: upf(reg) {upf.mean()*100:.1f}%  upf(mean) {upf2.mean()*100:.1f}%')
    preds={'upw':np.abs(At)*mu,'upfirst':np.abs(Ut)*ma,
      'upw_reg':np.abs(At)*su,'upf_reg':np.abs(Ut)*sa,
      'mix_reg':np.where(upf[None,:],np.abs(Ut)*sa,np.abs(At)*su),
      'mix_mean':np.where(upf2[None,:],np.abs(Ut)*ma,np.abs(At)*mu),
      'oracle':np.abs(ht)}
    frs={k:curve(s,ht,0) for k,s in preds.items()}
    levels=[min(e for e,b in frs['upw'] if b>=x) for x in (0.19,0.22,0.25)]
    for E in levels:
        print(f'L{L} err<={E:.4f}: '+'  '.join(f'{k} {100*at(f,E):.1f}%' for k,f in frs.items()), flush=True)
